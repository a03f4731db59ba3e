#include "common/files.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "crypto/random.h"
#include "crypto/sha256.h"

namespace fedrad {

absl::Status ErrnoStatus(absl::string_view action, const std::string& path) {
  const int err = errno;
  std::string msg = absl::StrCat(action, " '", path, "': ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(msg);
  if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(msg);
  return absl::InternalError(msg);
}

absl::StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes) {
  // O_NONBLOCK: opening a FIFO named where a file is expected returns at once
  // (and is refused below) instead of waiting for a writer.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return ErrnoStatus("cannot open", path);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    absl::Status s = ErrnoStatus("cannot stat", path);
    ::close(fd);
    return s;
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not a regular file"));
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    return absl::ResourceExhaustedError(
        absl::StrCat("'", path, "' is ", st.st_size, " bytes, more than the limit of ", max_bytes));
  }
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::read(fd, out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status s = ErrnoStatus("cannot read", path);
      ::close(fd);
      return s;
    }
    if (n == 0) break;  // Shrunk while reading.
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  ::close(fd);
  return out;
}

absl::Status RaiseOpenFileLimit(uint64_t wanted) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return ErrnoStatus("getrlimit", "RLIMIT_NOFILE");
  if (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur >= wanted) return absl::OkStatus();
  if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < wanted) {
    return absl::ResourceExhaustedError(
        absl::StrCat("this needs ", wanted, " open files but the hard limit is ", limit.rlim_max,
                     " (raise it with `ulimit -Hn` or LimitNOFILE= in the service unit)"));
  }
  limit.rlim_cur = limit.rlim_max == RLIM_INFINITY ? static_cast<rlim_t>(wanted) : limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) return ErrnoStatus("setrlimit", "RLIMIT_NOFILE");
  return absl::OkStatus();
}

absl::Status SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("cannot open folder", dir);
  const int rc = ::fsync(fd);
  absl::Status s = rc == 0 ? absl::OkStatus() : ErrnoStatus("cannot fsync folder", dir);
  ::close(fd);
  return s;
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view data, mode_t mode) {
  return WriteFileAtomically(path, std::vector<std::string_view>{data}, mode);
}

absl::StatusOr<std::string> WriteTemporaryFile(const std::string& dir, absl::string_view name,
                                               const std::vector<std::string_view>& parts, mode_t mode, bool durable) {
  absl::StatusOr<std::string> salt = crypto::SecureRandomBytes(6);
  if (!salt.ok()) return salt.status();
  const std::string tmp = absl::StrCat(dir, "/.", name, ".", crypto::HexEncode(*salt), ".tmp");
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return ErrnoStatus("cannot create", tmp);
  // open() applies the umask; make the requested mode exact (keys need 0600).
  ::fchmod(fd, mode);
  for (std::string_view data : parts) {
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::write(fd, data.data() + done, data.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        absl::Status s = ErrnoStatus("cannot write", tmp);
        ::close(fd);
        ::unlink(tmp.c_str());
        return s;
      }
      done += static_cast<size_t>(n);
    }
  }
  if (durable && ::fsync(fd) != 0) {
    absl::Status s = ErrnoStatus("cannot fsync", tmp);
    ::close(fd);
    ::unlink(tmp.c_str());
    return s;
  }
  ::close(fd);
  return tmp;
}

absl::Status RenameIntoPlace(const std::string& tmp, const std::string& path, bool durable) {
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status s = ErrnoStatus("cannot rename into place", path);
    ::unlink(tmp.c_str());
    return s;
  }
  if (!durable) return absl::OkStatus();
  std::filesystem::path target(path);
  return SyncDirectory(target.has_parent_path() ? target.parent_path().string() : std::string("."));
}

absl::Status WriteFileAtomically(const std::string& path, const std::vector<std::string_view>& parts, mode_t mode,
                                 bool durable) {
  std::filesystem::path target(path);
  const std::string dir = target.has_parent_path() ? target.parent_path().string() : std::string(".");
  absl::StatusOr<std::string> tmp = WriteTemporaryFile(dir, target.filename().string(), parts, mode, durable);
  if (!tmp.ok()) return tmp.status();
  return RenameIntoPlace(*tmp, path, durable);
}

absl::Status EnsureDirectory(const std::string& dir, mode_t mode) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot create folder '", dir, "': ", ec.message()));
  }
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::FailedPreconditionError(absl::StrCat("'", dir, "' is not a folder"));
  }
  return absl::OkStatus();
}

}  // namespace fedrad
