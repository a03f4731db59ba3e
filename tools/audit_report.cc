// `fedrad audit report`: the ledgers' facts as JSON and as one HTML page.
#include <algorithm>
#include <map>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "common/clock.h"
#include "tools/audit.h"

namespace fedrad::tools {
namespace {

using nlohmann::json;

// An entry as the report lists it: its body, read through its kind, and
// its time.
json Listed(const ledger::Body& body, int64_t at_ms) {
  json j = json::parse(ledger::EncodeBody(body), nullptr, false);
  if (!j.is_object()) j = json::object();
  j["at"] = UtcTime(at_ms);
  return j;
}

// What one site's ledger says happened.
json SiteFacts(const AuditedLedger& l) {
  json site = {{"site", l.writer},
               {"ledger", l.path},
               {"ledger_entries", l.entries.size()},
               {"ledger_intact", l.problems.empty() && l.unreadable.empty()}};
  json rounds = json::array(), counts = json::array(), accesses = json::array(), sent = json::array(),
       models = json::array(), evaluations = json::array(), refusals = json::array(), configs = json::array(),
       models_refused = json::array(), evaluation_charges = json::array(), models_verified = json::array();
  std::map<std::pair<int64_t, int64_t>, std::string> outcomes;  // (round, attempt) -> outcome
  std::vector<std::pair<int64_t, int64_t>> sent_keys;           // (round, attempt) of each of `sent`
  std::map<int64_t, double> by_round;                           // round -> the larger ε part after it
  double epsilon = 0, delta = 0, epsilon_max = 0;
  bool dp = false;
  for (size_t i = 0; i < l.entries.size(); ++i) {
    if (!l.bodies[i]) continue;  // unreadable: a problem of the verification
    const ledger::Body& body = *l.bodies[i];
    const int64_t at_ms = l.entries[i].at_ms;
    if (std::holds_alternative<ledger::DataAccess>(body)) {
      accesses.push_back(Listed(body, at_ms));
    } else if (const auto* u = std::get_if<ledger::UpdateSent>(&body)) {
      sent.push_back(Listed(body, at_ms));
      sent_keys.push_back({u->round, u->attempt});
    } else if (std::holds_alternative<ledger::ModelReceived>(body)) {
      models.push_back(Listed(body, at_ms));
    } else if (std::holds_alternative<ledger::EvaluationSent>(body)) {
      evaluations.push_back(Listed(body, at_ms));
    } else if (std::holds_alternative<ledger::ModelRefused>(body)) {
      models_refused.push_back(Listed(body, at_ms));
    } else if (std::holds_alternative<ledger::ModelVerified>(body)) {
      models_verified.push_back(Listed(body, at_ms));
    } else if (std::holds_alternative<ledger::PolicyRefused>(body)) {
      refusals.push_back(Listed(body, at_ms));
    } else if (const auto* r = std::get_if<ledger::BudgetRefused>(&body)) {
      refusals.push_back(Listed(body, at_ms));
      epsilon_max = r->epsilon_max;
    } else if (const auto* c = std::get_if<ledger::DpCharge>(&body)) {
      epsilon = std::max(epsilon, c->epsilon_after);
      delta = c->delta;
      dp = true;
      // The site's ε is the larger of its training and evaluation parts
      // (disjoint patients); neither part ever goes down.
      by_round[c->round] = std::max(by_round[c->round], c->epsilon_after);
      (c->charge == "count"        ? counts
       : c->charge == "evaluation" ? evaluation_charges
                                   : rounds)
          .push_back(Listed(body, at_ms));
    } else if (const auto* o = std::get_if<ledger::UpdateOutcome>(&body)) {
      outcomes[{o->round, o->attempt}] = o->outcome;
    } else if (const auto* config = std::get_if<ledger::Config>(&body)) {
      epsilon_max = config->privacy.epsilon_max;
      if (config->privacy.enabled) delta = config->privacy.delta;
      configs.push_back({{"at", UtcTime(at_ms)},
                         {"file_sha256", config->file_sha256},
                         {"privacy", Listed(body, at_ms)["privacy"]},
                         {"preprocess", config->preprocess}});
    }
  }
  for (size_t k = 0; k < sent.size(); ++k) {
    auto it = outcomes.find(sent_keys[k]);
    sent[k]["outcome"] = it == outcomes.end() ? "unknown" : it->second;
  }
  // ε after each round: the ledger's total after that round's last charge.
  json series = json::array();
  double running = 0;
  for (const auto& [round, eps] : by_round) {
    running = std::max(running, eps);
    series.push_back({{"round", round}, {"epsilon", running}});
  }
  site["differentially_private"] = dp;
  site["epsilon_spent"] = epsilon;
  site["delta"] = delta;
  site["epsilon_max"] = epsilon_max;
  site["budget_left"] = epsilon_max > 0 ? std::max(0.0, epsilon_max - epsilon) : 0.0;
  site["epsilon_by_round"] = series;
  site["dp_rounds"] = rounds;
  site["count_releases"] = counts;
  site["evaluation_releases"] = evaluation_charges;
  site["data_accesses"] = accesses;
  site["updates_sent"] = sent;
  site["models_received"] = models;
  site["models_refused"] = models_refused;
  site["models_verified"] = models_verified;
  site["evaluations_sent"] = evaluations;
  site["budget_refusals"] = refusals;
  site["config_changes"] = configs;
  return site;
}

json CoordinatorFacts(const AuditedLedger& l) {
  json published = json::array();
  std::map<std::pair<int64_t, int64_t>, json> rounds;  // (round, attempt)
  std::map<std::string, json> reported;                // site -> [{round, epsilon}], as the sites told the coordinator
  for (size_t i = 0; i < l.entries.size(); ++i) {
    const int64_t at_ms = l.entries[i].at_ms;
    if (const auto* o = l.As<ledger::RoundOpened>(i)) {
      json& round = rounds[{o->round, o->attempt}];
      round["round"] = o->round;
      round["attempt"] = o->attempt;
      round["selected"] = o->selected;
      round["opened"] = UtcTime(at_ms);
      round["status"] = "open";
    } else if (const auto* a = l.As<ledger::Aggregate>(i)) {
      json& round = rounds[{a->round, a->attempt}];
      round["strategy"] = a->strategy;
      round["model_sha256"] = a->sha256;
      round["updates"] = a->updates.size();
    } else if (const auto* c = l.As<ledger::RoundClosed>(i)) {
      json& round = rounds[{c->round, c->attempt}];
      round["status"] = c->status;
      round["answered"] = c->answered.value_or(0);
      round["note"] = c->note.value_or("");
      round["closed"] = UtcTime(at_ms);
    } else if (const auto* p = l.As<ledger::ModelPublished>(i)) {
      published.push_back({{"round", p->round}, {"sha256", p->sha256}, {"at", UtcTime(at_ms)}});
    } else if (const auto* u = l.As<ledger::UpdateAccepted>(i); u != nullptr && u->epsilon_spent) {
      json& s = reported[u->site];
      if (s.is_null()) s = json::array();
      s.push_back({{"round", u->round}, {"epsilon", *u->epsilon_spent}});
    }
  }
  json round_rows = json::array();
  for (auto& [key, round] : rounds) {
    if (round.contains("round")) round_rows.push_back(round);
  }
  json sites = json::object();
  for (auto& [site, series] : reported) sites[site] = series;
  return {{"coordinator", l.writer},
          {"ledger", l.path},
          {"ledger_entries", l.entries.size()},
          {"ledger_intact", l.problems.empty() && l.unreadable.empty()},
          {"rounds", round_rows},
          {"models_published", published},
          {"epsilon_reported_by_site", sites}};
}

json Report(const AuditVerification& v) {
  json ledgers = json::array(), sites = json::array();
  json coordinator;
  for (const AuditedLedger& l : v.ledgers) {
    // Where the ledger started over in place of a lost one: its gaps.
    json restarts = json::array();
    for (size_t i = 0; i < l.entries.size(); ++i) {
      if (l.As<ledger::LedgerRestarted>(i) != nullptr) restarts.push_back(Listed(*l.bodies[i], l.entries[i].at_ms));
    }
    ledgers.push_back({{"path", l.path},
                       {"role", l.role},
                       {"writer", l.writer},
                       {"entries", l.entries.size()},
                       {"problems", l.problems.size()},
                       {"restarts", restarts}});
    if (l.role == "node") sites.push_back(SiteFacts(l));
    if (l.role == "coordinator") coordinator = CoordinatorFacts(l);
  }
  json out = {{"report", "fedrad privacy audit"},
              {"verification",
               {{"status", v.ok() ? "pass" : "fail"},
                {"problems", v.problems},
                {"notes", v.notes},
                {"updates_cross_checked", v.updates_cross_checked},
                {"models_cross_checked", v.models_cross_checked},
                {"publications_verified", v.publications_verified},
                {"ledgers", ledgers}}},
              {"sites", sites}};
  if (!coordinator.is_null()) out["federation"] = coordinator;
  return out;
}

std::string Escape(const std::string& s) {
  return absl::StrReplaceAll(s, {{"&", "&amp;"}, {"<", "&lt;"}, {">", "&gt;"}, {"\"", "&quot;"}, {"'", "&#39;"}});
}

std::string Cell(const json& j) {
  if (j.is_string()) return Escape(j.get<std::string>());
  if (j.is_number_float()) return absl::StrFormat("%.6g", j.get<double>());
  if (j.is_null()) return "";
  return Escape(j.dump(-1, ' ', false, json::error_handler_t::replace));
}

// A table of `rows` (objects) with the given columns (key, heading).
std::string Table(const json& rows, const std::vector<std::pair<std::string, std::string>>& columns,
                  const std::string& css_class) {
  if (!rows.is_array() || rows.empty()) return "<p class=\"none\">none</p>\n";
  std::string out = absl::StrCat("<table class=\"", css_class, "\"><thead><tr>");
  for (const auto& [key, heading] : columns) absl::StrAppend(&out, "<th>", Escape(heading), "</th>");
  absl::StrAppend(&out, "</tr></thead><tbody>\n");
  for (const json& r : rows) {
    absl::StrAppend(&out, "<tr>");
    for (const auto& [key, heading] : columns) {
      const bool hash = key.find("sha256") != std::string::npos;
      absl::StrAppend(&out, "<td", hash ? " class=\"hash\"" : "", " data-key=\"", key, "\">",
                      r.contains(key) ? Cell(r[key]) : "", "</td>");
    }
    absl::StrAppend(&out, "</tr>\n");
  }
  absl::StrAppend(&out, "</tbody></table>\n");
  return out;
}

constexpr char kStyle[] = R"css(
body { font-family: sans-serif; margin: 2em; color: #1a1a1a; max-width: 80em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f2f2f2; }
td.hash { font-family: monospace; font-size: .85em; word-break: break-all; max-width: 30em; }
.pass { color: #11772d; font-weight: bold; } .fail { color: #b00020; font-weight: bold; }
.none { color: #777; font-style: italic; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: .2em 1.5em; }
dl.summary dt { font-weight: bold; }
#epsilon-chart { border: 1px solid #ccc; background: #fff; }
)css";

// Draws the ε chart from the embedded facts: one line per site (its own
// ledger, else what it reported to the coordinator), its budget dashed.
constexpr char kChartScript[] = R"js(
(function () {
  var data = JSON.parse(document.getElementById('report-data').textContent);
  var series = [];
  (data.sites || []).forEach(function (s) {
    series.push({site: s.site, points: s.epsilon_by_round, max: s.epsilon_max, source: 'site ledger'});
  });
  var reported = (data.federation || {}).epsilon_reported_by_site || {};
  Object.keys(reported).forEach(function (site) {
    if (!series.some(function (s) { return s.site === site; })) {
      series.push({site: site, points: reported[site], max: 0, source: 'reported to the coordinator'});
    }
  });
  var svg = document.getElementById('epsilon-chart');
  var NS = 'http://www.w3.org/2000/svg';
  var W = 720, H = 360, L = 60, R = 180, T = 20, B = 45;
  function el(name, attrs, text) {
    var e = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e);
    return e;
  }
  var maxRound = 1, maxEps = 0;
  series.forEach(function (s) {
    s.points.forEach(function (p) { maxRound = Math.max(maxRound, p.round); maxEps = Math.max(maxEps, p.epsilon); });
    maxEps = Math.max(maxEps, s.max || 0);
  });
  if (maxEps <= 0) maxEps = 1;
  maxEps *= 1.1;
  function x(r) { return L + (W - L - R) * (r / maxRound); }
  function y(e) { return H - B - (H - T - B) * (e / maxEps); }
  el('line', {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: '#333'});
  el('line', {x1: L, y1: T, x2: L, y2: H - B, stroke: '#333'});
  for (var i = 0; i <= 5; i++) {
    var e = maxEps * i / 5;
    el('line', {x1: L - 4, y1: y(e), x2: W - R, y2: y(e), stroke: '#eee'});
    el('text', {x: L - 8, y: y(e) + 4, 'text-anchor': 'end', 'font-size': 11}, e.toFixed(2));
    var r = Math.round(maxRound * i / 5);
    el('text', {x: x(r), y: H - B + 16, 'text-anchor': 'middle', 'font-size': 11}, String(r));
  }
  el('text', {x: (L + W - R) / 2, y: H - 8, 'text-anchor': 'middle', 'font-size': 12}, 'round');
  el('text', {x: 14, y: (T + H - B) / 2, 'text-anchor': 'middle', 'font-size': 12,
              transform: 'rotate(-90 14 ' + (T + H - B) / 2 + ')'}, '\u03b5 spent');
  var colours = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2'];
  series.forEach(function (s, k) {
    var c = colours[k % colours.length];
    var pts = [{round: 0, epsilon: 0}].concat(s.points);
    el('polyline', {points: pts.map(function (p) { return x(p.round) + ',' + y(p.epsilon); }).join(' '),
                    fill: 'none', stroke: c, 'stroke-width': 2.5, 'class': 'epsilon-line',
                    'data-site': s.site, 'data-points': s.points.length,
                    'data-last': s.points.length ? s.points[s.points.length - 1].epsilon : 0});
    if (s.max > 0) {
      el('line', {x1: L, y1: y(s.max), x2: W - R, y2: y(s.max), stroke: c, 'stroke-dasharray': '6 4',
                  'class': 'budget-line', 'data-site': s.site});
    }
    el('rect', {x: W - R + 15, y: T + 18 * k, width: 12, height: 12, fill: c});
    el('text', {x: W - R + 32, y: T + 10 + 18 * k, 'font-size': 12}, s.site + (s.source === 'site ledger' ? '' : ' *'));
  });
  document.body.setAttribute('data-chart', series.length ? 'drawn' : 'empty');
})();
)js";

}  // namespace

std::string AuditReportJson(const AuditVerification& v) {
  return Report(v).dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string AuditReportHtml(const AuditVerification& v) {
  const json r = Report(v);
  std::string out =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
      "<title>fedrad privacy audit</title>\n<style>";
  absl::StrAppend(&out, kStyle, "</style></head>\n<body>\n<h1>fedrad privacy audit</h1>\n");
  const bool pass = v.ok();
  absl::StrAppend(&out, "<p id=\"verdict\" class=\"", pass ? "pass" : "fail", "\">",
                  pass ? "PASS: every ledger is intact and consistent with the others"
                       : absl::StrCat("FAIL: ", v.problems.size(), " problem(s)"),
                  "</p>\n");
  absl::StrAppend(&out, "<p>Cross-checked: ", v.updates_cross_checked,
                  " aggregated update(s) found in their site's ledger; ", v.models_cross_checked,
                  " model use(s) found published by the coordinator; ", v.publications_verified,
                  " signed model publication(s) re-verified.</p>\n");
  if (!v.problems.empty()) {
    absl::StrAppend(&out, "<h2>Problems</h2><ul id=\"problems\">\n");
    for (const std::string& p : v.problems) absl::StrAppend(&out, "<li>", Escape(p), "</li>\n");
    absl::StrAppend(&out, "</ul>\n");
  }
  if (!v.notes.empty()) {
    absl::StrAppend(&out, "<h2>Not checked</h2><ul>\n");
    for (const std::string& n : v.notes) absl::StrAppend(&out, "<li>", Escape(n), "</li>\n");
    absl::StrAppend(&out, "</ul>\n");
  }
  absl::StrAppend(
      &out, "<h2>Ledgers</h2>\n",
      Table(
          r["verification"]["ledgers"],
          {{"role", "role"}, {"writer", "writer"}, {"path", "file"}, {"entries", "entries"}, {"problems", "problems"}},
          "ledgers"));
  absl::StrAppend(&out, "<h2>&epsilon; spent per site</h2>\n",
                  "<svg id=\"epsilon-chart\" width=\"720\" height=\"360\" viewBox=\"0 0 720 360\" role=\"img\" "
                  "aria-label=\"epsilon spent per site over rounds\"></svg>\n",
                  "<p class=\"none\">Dashed: each site's budget (epsilon_max). * : as the site reported it to the "
                  "coordinator (its own ledger was not given).</p>\n");
  for (const json& s : r["sites"]) {
    const std::string site = s.value("site", "");
    absl::StrAppend(&out, "<section class=\"site\" data-site=\"", Escape(site), "\">\n<h2>Site ", Escape(site),
                    "</h2>\n<dl class=\"summary\">");
    auto item = [&](const std::string& key, const std::string& label, const std::string& value) {
      absl::StrAppend(&out, "<dt>", label, "</dt><dd data-key=\"", key, "\">", value, "</dd>");
    };
    item("ledger", "ledger",
         Escape(s.value("ledger", "")) + (s.value("ledger_intact", false) ? " (intact)" : " (BROKEN)"));
    item("differentially_private", "differentially private", s.value("differentially_private", false) ? "yes" : "NO");
    item("epsilon_spent", "&epsilon; spent", absl::StrFormat("%.6g", s.value("epsilon_spent", 0.0)));
    item("delta", "&delta;", absl::StrFormat("%.6g", s.value("delta", 0.0)));
    item("epsilon_max", "budget (&epsilon; max)", absl::StrFormat("%.6g", s.value("epsilon_max", 0.0)));
    item("budget_left", "budget left", absl::StrFormat("%.6g", s.value("budget_left", 0.0)));
    absl::StrAppend(
        &out, "</dl>\n<h3>DP-SGD per round</h3>\n",
        Table(s["dp_rounds"],
              {{"round", "round"},
               {"attempt", "attempt"},
               {"unit", "unit"},
               {"units", "units"},
               {"noise_multiplier", "σ"},
               {"clip_norm", "C"},
               {"sampling_rate", "q"},
               {"steps", "steps"},
               {"delta", "δ"},
               {"epsilon_after", "ε after"},
               {"at", "charged at"}},
              "dp-rounds"),
        "<h3>Noised counts released</h3>\n",
        Table(s["count_releases"],
              {{"round", "round"},
               {"units", "units"},
               {"noise_multiplier", "σ"},
               {"released", "released"},
               {"epsilon_after", "ε after"}},
              "counts"),
        "<h3>Evaluation releases (validation patients)</h3>\n",
        Table(s["evaluation_releases"],
              {{"round", "round"}, {"noise_multiplier", "σ"}, {"epsilon_after", "ε after (evaluation part)"}},
              "evaluation-releases"),
        "<h3>Data accesses</h3>\n",
        Table(s["data_accesses"],
              {{"at", "at"},
               {"purpose", "purpose"},
               {"round", "round"},
               {"images", "images"},
               {"patients", "patients"},
               {"sop_instance_uids_sha256", "SHA-256 of the sorted SOPInstanceUIDs"}},
              "accesses"),
        "<h3>Updates sent</h3>\n",
        Table(s["updates_sent"],
              {{"round", "round"},
               {"attempt", "attempt"},
               {"update_sha256", "update SHA-256"},
               {"bytes", "bytes"},
               {"dtype", "dtype"},
               {"num_examples", "count sent"},
               {"resent_from_attempt", "sent again, trained for attempt"},
               {"outcome", "outcome"}},
              "updates"),
        "<h3>Models received</h3>\n",
        Table(s["models_received"], {{"round", "round"}, {"sha256", "SHA-256"}, {"bytes", "bytes"}}, "models"),
        "<h3>Model publications verified (the coordinator's signature, checked before use)</h3>\n",
        Table(s["models_verified"],
              {{"round", "published as round"},
               {"sha256", "SHA-256"},
               {"coordinator_certificate_sha256", "coordinator certificate SHA-256"}},
              "models-verified"),
        "<h3>Models refused</h3>\n",
        Table(s["models_refused"], {{"round", "round"}, {"sha256", "SHA-256"}, {"reason", "reason"}}, "models-refused"),
        "<h3>Evaluation reports sent</h3>\n",
        Table(s["evaluations_sent"],
              {{"round", "round"}, {"model_sha256", "model SHA-256"}, {"suppressed", "nothing sent"}}, "evaluations"),
        "<h3>Tasks refused (budget or policy)</h3>\n",
        Table(s["budget_refusals"],
              {{"round", "round"},
               {"task", "task"},
               {"epsilon_spent", "ε spent"},
               {"epsilon_max", "ε max"},
               {"detail", "detail"}},
              "refusals"),
        "<h3>Configuration changes</h3>\n",
        Table(s["config_changes"],
              {{"at", "at"},
               {"file_sha256", "node.toml SHA-256"},
               {"privacy", "privacy"},
               {"preprocess", "preprocessing"}},
              "configs"),
        "</section>\n");
  }
  if (r.contains("federation")) {
    const json& f = r["federation"];
    absl::StrAppend(
        &out, "<section class=\"federation\">\n<h2>Coordinator ", Escape(f.value("coordinator", "")),
        "</h2>\n<h3>Rounds</h3>\n",
        Table(f["rounds"],
              {{"round", "round"},
               {"attempt", "attempt"},
               {"opened", "opened"},
               {"selected", "sites asked"},
               {"answered", "answered"},
               {"status", "status"},
               {"strategy", "strategy"},
               {"updates", "updates aggregated"},
               {"model_sha256", "model SHA-256"},
               {"note", "note"}},
              "rounds"),
        "<h3>Models published</h3>\n",
        Table(f["models_published"], {{"round", "round"}, {"sha256", "SHA-256"}, {"at", "at"}}, "published"),
        "</section>\n");
  }
  // The facts for the chart. Every '<' and '>' (only ever inside strings, some
  // of them site-written) is escaped, so no "</script>" ends the element and
  // no "<!--<script>" makes the parser swallow the script after it.
  absl::StrAppend(&out, "<script type=\"application/json\" id=\"report-data\">",
                  absl::StrReplaceAll(r.dump(-1, ' ', true), {{"<", "\\u003c"}, {">", "\\u003e"}}),
                  "</script>\n<script>", kChartScript, "</script>\n</body></html>\n");
  return out;
}

}  // namespace fedrad::tools
