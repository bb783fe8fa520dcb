//! Reading a project's static file without letting the file system stall the server: only a
//! regular file is read (a FIFO, a device or a socket in a project, even one swapped in after the
//! path was checked, is refused without blocking), at most [`MAX_STATIC_FILE`] bytes, and at most
//! [`READERS`] reads run at once on the blocking pool (more wait, then get 503).

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

/// The largest static file served.
pub const MAX_STATIC_FILE: u64 = 64 << 20;

/// Static files read at once; each read holds a thread of the blocking pool.
pub const READERS: usize = 16;

/// How long a request waits for a reader before it is answered 503.
const WAIT_FOR_A_READER: Duration = Duration::from_secs(10);

/// Why a static file was not read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Not a regular file (a folder, a FIFO, a device, a socket).
    #[error("not a regular file")]
    NotAFile,
    /// Larger than [`MAX_STATIC_FILE`].
    #[error("{0} bytes: larger than the {MAX_STATIC_FILE} bytes a static file may have")]
    TooLarge(u64),
    /// Every reader was busy for too long.
    #[error("the server is busy reading other files; try again")]
    Busy,
    /// The file could not be opened or read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The readers of static files, shared by every request.
#[derive(Debug, Clone)]
pub struct StaticFiles {
    /// One permit per read that may run at once.
    readers: Arc<Semaphore>,
}

impl Default for StaticFiles {
    fn default() -> Self {
        Self {
            readers: Arc::new(Semaphore::new(READERS)),
        }
    }
}

impl StaticFiles {
    /// The bytes of the regular file `path`.
    pub async fn read(&self, path: PathBuf) -> Result<Vec<u8>, FileError> {
        let permit = tokio::time::timeout(WAIT_FOR_A_READER, self.readers.clone().acquire_owned())
            .await
            .map_err(|_| FileError::Busy)?
            .map_err(|_| FileError::Busy)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            read_regular_file(&path)
        })
        .await
        .map_err(|e| FileError::Io(std::io::Error::other(e)))?
    }
}

/// Opens without blocking (a FIFO would otherwise wait for a writer), then reads only if what was
/// opened is a regular file of a size that may be served.
fn read_regular_file(path: &std::path::Path) -> Result<Vec<u8>, FileError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = options.open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(FileError::NotAFile);
    }
    if metadata.len() > MAX_STATIC_FILE {
        return Err(FileError::TooLarge(metadata.len()));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_STATIC_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_STATIC_FILE {
        return Err(FileError::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}
