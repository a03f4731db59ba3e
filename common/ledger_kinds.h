#ifndef FEDRAD_COMMON_LEDGER_KINDS_H_
#define FEDRAD_COMMON_LEDGER_KINDS_H_

// The kinds of audit-ledger entries (common/ledger.h), named once: the node's
// and the coordinator's stores write them, `fedrad audit verify` and `audit
// report` read them. A misspelt kind is then a compile error, not an entry
// silently missing from a report.

namespace fedrad::ledger_kind {

// Both ledgers start with kWriterCertificate (common/ledger.h).

// The node's ledger (node/node_store.h).
inline constexpr char kConfig[] = "config";
inline constexpr char kRoundJoined[] = "round_joined";
inline constexpr char kModelReceived[] = "model_received";
inline constexpr char kModelRefused[] = "model_refused";
inline constexpr char kCoordinatorCertificate[] = "coordinator_certificate";
inline constexpr char kModelVerified[] = "model_verified";
inline constexpr char kDataAccess[] = "data_access";
inline constexpr char kUpdateSent[] = "update_sent";
inline constexpr char kUpdateOutcome[] = "update_outcome";
inline constexpr char kBudgetRefused[] = "budget_refused";
inline constexpr char kPolicyRefused[] = "policy_refused";
inline constexpr char kEvaluationSent[] = "evaluation_sent";
inline constexpr char kDpCharge[] = "dp_charge";

// The coordinator's ledger (coordinator/state_store.h).
inline constexpr char kModelPublished[] = "model_published";
inline constexpr char kRoundOpened[] = "round_opened";
inline constexpr char kRoundResumed[] = "round_resumed";
inline constexpr char kRoundClosed[] = "round_closed";
inline constexpr char kAggregate[] = "aggregate";
inline constexpr char kUpdateAccepted[] = "update_accepted";
inline constexpr char kUpdateRejected[] = "update_rejected";
inline constexpr char kUpdateDeclined[] = "update_declined";
inline constexpr char kEvaluationReceived[] = "evaluation_received";
inline constexpr char kReportRefused[] = "report_refused";

}  // namespace fedrad::ledger_kind

#endif  // FEDRAD_COMMON_LEDGER_KINDS_H_
