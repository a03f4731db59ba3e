#ifndef FEDRAD_COMMON_FILES_H_
#define FEDRAD_COMMON_FILES_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fedrad {

// Reads a whole file. Refuses files larger than `max_bytes` (a hostile or
// mistaken path must not exhaust memory).
absl::StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes = uint64_t{1} << 30);

// Durably replaces `path` with `data`: writes a temporary file in the same
// folder with permissions `mode`, fsyncs it, renames it over `path`, and
// fsyncs the folder. After a crash `path` holds either the old or the new
// content, never a mix.
absl::Status WriteFileAtomically(const std::string& path, std::string_view data, mode_t mode = 0644);
// The same, for a file made of several pieces written one after another
// (a header and a large body without concatenating them in memory).
// `durable = false` skips both fsyncs: still never a mix after a crash of
// the process, but a power loss may leave the old content or an empty file
// (for caches whose content is checked when read).
absl::Status WriteFileAtomically(const std::string& path, const std::vector<std::string_view>& parts,
                                 mode_t mode = 0644, bool durable = true);

// The two halves of WriteFileAtomically, for files named only once written
// (content-addressed ones, hashed while they are written): a new file
// ".<name>.<random>.tmp" in `dir` holding `parts` (fsynced when `durable`),
// whose path is returned; then its rename to `path` (and, when `durable`,
// the fsync of the folder). A failed rename removes the temporary file.
absl::StatusOr<std::string> WriteTemporaryFile(const std::string& dir, absl::string_view name,
                                               const std::vector<std::string_view>& parts, mode_t mode = 0644,
                                               bool durable = true);
absl::Status RenameIntoPlace(const std::string& tmp, const std::string& path, bool durable = true);

// fsync() of a folder, so that a rename inside it survives a crash.
absl::Status SyncDirectory(const std::string& dir);

// Creates `dir` and its parents if missing (like mkdir -p).
absl::Status EnsureDirectory(const std::string& dir, mode_t mode = 0755);

// Raises this process's soft limit on open files to at least `wanted` (up
// to the hard limit), for servers holding a socket per connected node.
// Fails, naming both numbers, if the hard limit is below `wanted`.
absl::Status RaiseOpenFileLimit(uint64_t wanted);

// An absl::Status for a failed system call on `path`, from errno.
absl::Status ErrnoStatus(absl::string_view action, const std::string& path);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_FILES_H_
