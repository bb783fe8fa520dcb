# Use the system's simde headers instead of a git clone, when they are installed
# (Debian: libsimde-dev). Without them CMake's FetchContent clones simde from GitHub.
if(EXISTS "/usr/include/simde/simde-common.h")
  set(FETCHCONTENT_SOURCE_DIR_SIMDE "/usr/include" CACHE PATH "system simde headers")
endif()
