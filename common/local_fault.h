#ifndef FEDRAD_COMMON_LOCAL_FAULT_H_
#define FEDRAD_COMMON_LOCAL_FAULT_H_

// A failure of this process's own machinery (its database, its training),
// carried as data on a status: work that meets one cannot succeed by being
// asked again, so a node stops on it instead of being charged round after
// round for work that fails. Whoever makes such an error marks it; whoever
// decides what to do reads the mark, never the message.

#include "absl/status/status.h"

namespace fedrad {

// `s` with the mark (OK stays OK).
absl::Status MarkLocalFault(absl::Status s);
bool IsLocalFault(const absl::Status& s);

}  // namespace fedrad

#endif  // FEDRAD_COMMON_LOCAL_FAULT_H_
