#ifndef FEDRAD_COMMON_BENCH_FLOOR_H_
#define FEDRAD_COMMON_BENCH_FLOOR_H_

// The floor of bench/round_overhead.sh: a separate build
// (cmake -DFEDRAD_BENCH_FLOOR=ON, bench/round_floor.sh) whose coordinator
// and node skip every per-byte cost of their own (the coordinator's
// finiteness and norm checks, hashing, spooling and folding of updates, all
// but each update's first chunk; the node's hashing and caching of the model
// it downloads and its finiteness check), so that what a cycle still costs is
// the transport: TLS, TCP, gRPC and the copies they make. Such binaries check
// nothing they are sent and say so when they start: never deploy one.
#ifndef FEDRAD_BENCH_FLOOR
#define FEDRAD_BENCH_FLOOR 0
#endif

namespace fedrad {
inline constexpr bool kBenchFloor = FEDRAD_BENCH_FLOOR != 0;
}  // namespace fedrad

#endif  // FEDRAD_COMMON_BENCH_FLOOR_H_
