#include "common/wire_codec.h"

#include <algorithm>
#include <cmath>

#include "common/model_zoo.h"
#include "proto/federation.pb.h"

namespace fedrad::protocol {
namespace {

std::optional<WireDtype> DecodeDtype(v1::WireDtype d) {
  if (!v1::WireDtype_IsValid(d)) return std::nullopt;
  return static_cast<WireDtype>(d);
}

v1::WireDtype EncodeDtype(WireDtype d) { return static_cast<v1::WireDtype>(d); }

// A count the wire carries in 32 bits, read into an int without wrapping.
int Clamped(uint64_t v, uint64_t most) { return static_cast<int>(std::min(v, most)); }

void Encode(const Publication& in, v1::ModelPublication* out) {
  out->set_round(static_cast<uint32_t>(in.round));
  out->set_signature(in.signature);
}

Publication Decode(const v1::ModelPublication& in) { return {in.round(), in.signature()}; }

}  // namespace

void Encode(const JoinedPlan& in, v1::Plan* out) {
  out->set_federation(in.federation);
  out->set_site(in.site);
  v1::ModelSpec* m = out->mutable_model();
  m->set_architecture(in.model.architecture);
  m->set_in_channels(static_cast<uint32_t>(in.model.in_channels));
  m->set_input_size(static_cast<uint32_t>(in.model.input_size));
  m->set_num_classes(static_cast<uint32_t>(in.model.num_classes));
  m->set_parameters(static_cast<uint64_t>(in.model.parameters));
  m->set_task(static_cast<uint32_t>(in.model.task));
  m->set_depth(static_cast<uint32_t>(in.model.depth));
  m->set_base_width(static_cast<uint32_t>(in.model.base_width));
  for (const std::string& name : in.model.class_names) m->add_class_names(name);
  for (const std::string& prefix : in.model.freeze) m->add_freeze(prefix);
  m->set_norm(in.model.norm);
  out->set_manifest_sha256(in.manifest_sha256);
  out->set_trained_sha256(in.trained_sha256);
  out->set_rounds(static_cast<uint32_t>(in.rounds));
  out->set_chunk_bytes(in.chunk_bytes);
  out->set_require_dp(in.require_dp);
  out->set_update_dtype(EncodeDtype(in.update_dtype.value_or(WireDtype::kFloat32)));
  out->set_min_report(static_cast<uint32_t>(in.min_report));
}

JoinedPlan Decode(const v1::Plan& in) {
  JoinedPlan p;
  p.federation = in.federation();
  p.site = in.site();
  // Values past an int are out of any range the node checks them against.
  p.model.architecture = in.model().architecture();
  p.model.in_channels = Clamped(in.model().in_channels(), 1 << 30);
  p.model.input_size = Clamped(in.model().input_size(), 1 << 30);
  p.model.num_classes = Clamped(in.model().num_classes(), 1 << 30);
  p.model.parameters = static_cast<int64_t>(std::min<uint64_t>(in.model().parameters(), uint64_t{1} << 32));
  p.model.task = static_cast<ModelTask>(Clamped(in.model().task(), 1 << 30));
  p.model.depth = Clamped(in.model().depth(), 1 << 30);
  p.model.base_width = Clamped(in.model().base_width(), 1 << 30);
  // More names than classes are refused by CheckModelSpec; none is copied past that.
  for (int i = 0; i < in.model().class_names_size() && i <= kMaxClasses; ++i) {
    p.model.class_names.push_back(in.model().class_names(i));
  }
  // More prefixes than the limit are refused by CheckModelSpec; none is copied past that.
  for (int i = 0; i < in.model().freeze_size() && static_cast<size_t>(i) <= kMaxFreezePrefixes; ++i) {
    p.model.freeze.push_back(in.model().freeze(i));
  }
  // Empty from a coordinator from before norm: GroupNorm, all it had.
  if (!in.model().norm().empty()) p.model.norm = in.model().norm();
  p.manifest_sha256 = in.manifest_sha256();
  p.trained_sha256 = in.trained_sha256();
  p.rounds = Clamped(in.rounds(), 1 << 30);
  p.chunk_bytes = in.chunk_bytes();
  p.require_dp = in.require_dp();
  p.update_dtype = DecodeDtype(in.update_dtype());
  // 0: a coordinator from before min_report; suppress below the default.
  p.min_report = in.min_report() > 0 ? Clamped(in.min_report(), 1000000) : 10;
  return p;
}

void Encode(const Task& in, v1::Task* out) {
  out->Clear();
  if (const auto* t = std::get_if<TrainingTask>(&in)) {
    v1::TrainTask* m = out->mutable_train();
    m->set_round(static_cast<uint32_t>(t->round));
    m->set_attempt(static_cast<uint32_t>(t->attempt));
    m->set_model_sha256(t->model_sha256);
    m->set_nonce(t->nonce);
    m->set_deadline_unix_ms(t->deadline_unix_ms);
    Encode(t->publication, m->mutable_publication());
    v1::Hyperparameters* hp = m->mutable_hyperparameters();
    hp->set_local_epochs(static_cast<uint32_t>(t->settings.local_epochs));
    hp->set_batch_size(static_cast<uint32_t>(t->settings.batch_size));
    hp->set_learning_rate(t->settings.learning_rate);
    hp->set_momentum(t->settings.momentum);
    hp->set_proximal_mu(t->settings.proximal_mu);
    hp->set_seed(t->seed);
  } else if (const auto* e = std::get_if<EvaluationTask>(&in)) {
    v1::EvalTask* m = out->mutable_evaluate();
    m->set_round(static_cast<uint32_t>(e->round));
    m->set_model_sha256(e->model_sha256);
    m->set_nonce(e->nonce);
    m->set_deadline_unix_ms(e->deadline_unix_ms);
    m->set_min_report(static_cast<uint32_t>(e->min_report));
    Encode(e->publication, m->mutable_publication());
  } else if (const auto* s = std::get_if<StopTask>(&in)) {
    out->mutable_stop()->set_reason(s->reason);
  } else if (const auto* f = std::get_if<RoundFailedNotice>(&in)) {
    v1::RoundFailed* m = out->mutable_failed();
    m->set_round(static_cast<uint32_t>(f->round));
    m->set_attempt(static_cast<uint32_t>(f->attempt));
    m->set_reason(f->reason);
  }
}

Task Decode(const v1::Task& in) {
  switch (in.kind_case()) {
    case v1::Task::kTrain: {
      const v1::TrainTask& m = in.train();
      TrainingTask t;
      t.round = m.round();
      t.attempt = m.attempt();
      t.model_sha256 = m.model_sha256();
      t.nonce = m.nonce();
      t.deadline_unix_ms = m.deadline_unix_ms();
      t.publication = Decode(m.publication());
      const v1::Hyperparameters& hp = m.hyperparameters();
      t.settings.local_epochs = Clamped(hp.local_epochs(), 1 << 30);
      t.settings.batch_size = Clamped(hp.batch_size(), 1 << 30);
      t.settings.learning_rate = hp.learning_rate();
      t.settings.momentum = hp.momentum();
      t.settings.proximal_mu = hp.proximal_mu();
      t.seed = hp.seed();
      return t;
    }
    case v1::Task::kEvaluate: {
      const v1::EvalTask& m = in.evaluate();
      return EvaluationTask{m.round(),      m.model_sha256(),       m.nonce(), m.deadline_unix_ms(),
                            m.min_report(), Decode(m.publication())};
    }
    case v1::Task::kStop:
      return StopTask{in.stop().reason()};
    case v1::Task::kFailed:
      return RoundFailedNotice{in.failed().round(), in.failed().attempt(), in.failed().reason()};
    case v1::Task::KIND_NOT_SET:
      break;
  }
  return std::monostate();
}

void Encode(const UpdateClaim& in, v1::UpdateHeader* out) {
  out->set_round(static_cast<uint32_t>(in.round));
  out->set_attempt(static_cast<uint32_t>(in.attempt));
  out->set_nonce(in.nonce);
  out->set_base_model_sha256(in.base_model_sha256);
  out->set_update_sha256(in.update_sha256);
  out->set_total_bytes(in.total_bytes);
  out->set_num_examples(in.num_examples);
  // Under DP the loss would be an unprotected statistic of the data.
  out->set_has_train_loss(in.train_loss.has_value());
  out->set_train_loss(in.train_loss.value_or(0));
  out->set_dtype(EncodeDtype(in.dtype.value_or(WireDtype::kFloat32)));
  out->set_pipeline(in.pipeline);
  out->set_ledger_seq(in.ledger_seq);
  out->set_ledger_sha256(in.ledger_sha256);
  if (in.privacy) {
    const PrivacyReport& r = *in.privacy;
    v1::PrivacyReport* p = out->mutable_privacy();
    p->set_unit(r.unit);
    p->set_noise_multiplier(r.noise_multiplier);
    p->set_clip_norm(r.clip_norm);
    p->set_sampling_rate(r.sampling_rate);
    p->set_steps(static_cast<uint64_t>(r.steps));
    p->set_delta(r.delta);
    p->set_epsilon_spent(r.epsilon_spent);
    p->set_epsilon_max(r.epsilon_max);
  }
}

UpdateClaim Decode(const v1::UpdateHeader& in) {
  UpdateClaim c;
  c.round = in.round();
  c.attempt = in.attempt();
  c.nonce = in.nonce();
  c.base_model_sha256 = in.base_model_sha256();
  c.update_sha256 = in.update_sha256();
  c.total_bytes = in.total_bytes();
  c.num_examples = in.num_examples();
  // A loss sent without its flag is not taken, but must still be a number.
  if (in.has_train_loss() || !std::isfinite(in.train_loss())) c.train_loss = in.train_loss();
  c.dtype = DecodeDtype(in.dtype());
  c.pipeline = in.pipeline();
  c.ledger_seq = in.ledger_seq();
  c.ledger_sha256 = in.ledger_sha256();
  if (in.has_privacy()) {
    const v1::PrivacyReport& r = in.privacy();
    // Steps past an int64 stay out of range for CheckPrivacyReport.
    c.privacy = PrivacyReport{r.unit(),
                              r.noise_multiplier(),
                              r.clip_norm(),
                              r.sampling_rate(),
                              static_cast<int64_t>(std::min<uint64_t>(r.steps(), uint64_t{1} << 62)),
                              r.delta(),
                              r.epsilon_spent(),
                              r.epsilon_max()};
  }
  return c;
}

void Encode(const DeclineNotice& in, v1::Decline* out) {
  out->set_round(static_cast<uint32_t>(in.round));
  out->set_attempt(static_cast<uint32_t>(in.attempt));
  out->set_nonce(in.nonce);
  switch (in.reason) {
    case DeclineReason::kBudgetExhausted:
      out->set_reason(v1::Decline::BUDGET_EXHAUSTED);
      break;
    case DeclineReason::kPolicy:
      out->set_reason(v1::Decline::POLICY);
      break;
    case DeclineReason::kModelRefused:
      out->set_reason(v1::Decline::MODEL_REFUSED);
      break;
    case DeclineReason::kUnspecified:
      out->set_reason(v1::Decline::REASON_UNSPECIFIED);
      break;
  }
  out->set_epsilon_spent(in.epsilon_spent);
  out->set_epsilon_max(in.epsilon_max);
  out->set_detail(in.detail);
}

DeclineNotice Decode(const v1::Decline& in) {
  DeclineNotice d;
  d.round = in.round();
  d.attempt = in.attempt();
  d.nonce = in.nonce();
  switch (in.reason()) {
    case v1::Decline::BUDGET_EXHAUSTED:
      d.reason = DeclineReason::kBudgetExhausted;
      break;
    case v1::Decline::POLICY:
      d.reason = DeclineReason::kPolicy;
      break;
    case v1::Decline::MODEL_REFUSED:
      d.reason = DeclineReason::kModelRefused;
      break;
    default:
      d.reason = DeclineReason::kUnspecified;
  }
  d.epsilon_spent = in.epsilon_spent();
  d.epsilon_max = in.epsilon_max();
  d.detail = in.detail();
  return d;
}

void Encode(const EvaluationReport& in, v1::Evaluation* out) {
  out->set_round(static_cast<uint32_t>(in.round));
  out->set_nonce(in.nonce);
  out->set_model_sha256(in.model_sha256);
  out->set_suppressed(in.suppressed);
  out->set_ledger_seq(in.ledger_seq);
  out->set_ledger_sha256(in.ledger_sha256);
  if (in.release) {
    const ReleasedEvaluation& r = *in.release;
    v1::EvaluationRelease* m = out->mutable_release();
    m->set_noise_multiplier(r.noise_multiplier);
    m->set_num_classes(static_cast<uint32_t>(r.num_classes));
    for (double v : r.statistics.confusion) m->add_confusion(v);
    m->set_loss_sum(r.statistics.loss_sum);
    for (double v : r.statistics.confidence) m->add_confidence(v);
    for (double v : r.statistics.scores) m->add_scores(v);
    m->set_dice_sum(r.statistics.dice_sum);
    for (double v : r.statistics.dice) m->add_dice(v);
    m->set_multilabel(r.statistics.multilabel);
    m->set_epsilon_spent(r.epsilon_spent);
    m->set_delta(r.delta);
    m->set_unit(r.unit);
  }
}

EvaluationReport Decode(const v1::Evaluation& in) {
  EvaluationReport e;
  e.round = in.round();
  e.nonce = in.nonce();
  e.model_sha256 = in.model_sha256();
  e.suppressed = in.suppressed();
  e.ledger_seq = in.ledger_seq();
  e.ledger_sha256 = in.ledger_sha256();
  if (in.has_release()) {
    const v1::EvaluationRelease& m = in.release();
    ReleasedEvaluation r;
    r.noise_multiplier = m.noise_multiplier();
    r.num_classes = m.num_classes();
    r.statistics.num_classes = Clamped(m.num_classes(), 1 << 30);
    r.statistics.confusion.assign(m.confusion().begin(), m.confusion().end());
    r.statistics.loss_sum = m.loss_sum();
    r.statistics.confidence.assign(m.confidence().begin(), m.confidence().end());
    r.statistics.scores.assign(m.scores().begin(), m.scores().end());
    r.statistics.dice_sum = m.dice_sum();
    r.statistics.dice.assign(m.dice().begin(), m.dice().end());
    r.statistics.multilabel = m.multilabel();
    r.epsilon_spent = m.epsilon_spent();
    r.delta = m.delta();
    r.unit = m.unit();
    e.release = std::move(r);
  }
  return e;
}

}  // namespace fedrad::protocol
