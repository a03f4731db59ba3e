#ifndef FEDRAD_COMMON_WIRE_CODEC_H_
#define FEDRAD_COMMON_WIRE_CODEC_H_

// The one place protocol types (common/protocol.h) become protobuf messages
// (proto/federation.proto) and back, for both sides. Encoding cannot fail.
// Decoding never fails either: it carries what the message says into the
// project type (unsigned widths widened, absent parts as empty optionals,
// an enum value this build does not know as empty or kUnspecified), and the
// receiver then checks it (protocol.h's Check functions, then its own
// against the plan and the open round), so a malformed answer can still be
// recorded as that site's answer.

#include "common/protocol.h"

namespace fedrad::v1 {
class Plan;
class Task;
class UpdateHeader;
class Decline;
class Evaluation;
}  // namespace fedrad::v1

namespace fedrad::protocol {

void Encode(const JoinedPlan& in, v1::Plan* out);
JoinedPlan Decode(const v1::Plan& in);

void Encode(const Task& in, v1::Task* out);
Task Decode(const v1::Task& in);

void Encode(const UpdateClaim& in, v1::UpdateHeader* out);
UpdateClaim Decode(const v1::UpdateHeader& in);

void Encode(const DeclineNotice& in, v1::Decline* out);
DeclineNotice Decode(const v1::Decline& in);

void Encode(const EvaluationReport& in, v1::Evaluation* out);
EvaluationReport Decode(const v1::Evaluation& in);

}  // namespace fedrad::protocol

#endif  // FEDRAD_COMMON_WIRE_CODEC_H_
