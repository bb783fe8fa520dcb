// A handler that builds a new value: the load generator sends upper case (--upper) and checks
// that the lower case comes back (bench/run.py's lowercase scenario, and --stomp).
exports.onMessage = (m) => m.toLowerCase();
