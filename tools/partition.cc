#include "tools/partition.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/files.h"
#include "crypto/sha256.h"
#include "node/dicom_reader.h"
#include "tools/synth.h"

namespace fedrad::tools {
namespace {

namespace fs = std::filesystem;

struct Patient {
  std::string id;
  std::vector<size_t> rows;  // indices into the label rows
  int64_t label = 0;         // the most common label of its images
};

// PatientID from the header, without reading pixel data.
std::string PatientIdOf(const std::string& path) {
  DcmFileFormat file;
  if (file.loadFileUntilTag(path.c_str(), EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_autoDetect, DCM_PixelData)
          .bad()) {
    return "";
  }
  OFString id;
  file.getDataset()->findAndGetOFString(DCM_PatientID, id);
  return id.c_str();
}

absl::Status LinkOrCopy(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::create_directories(to.parent_path(), ec);
  fs::remove(to, ec);
  fs::create_hard_link(from, to, ec);
  if (ec) {
    ec.clear();
    fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  }
  if (ec)
    return absl::InternalError(
        absl::StrCat("cannot copy '", from.string(), "' to '", to.string(), "': ", ec.message()));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PartitionResult> Partition(const PartitionOptions& o) {
  if (o.sites < 1 || o.sites > 1000) return absl::InvalidArgumentError("--sites must be between 1 and 1000");
  if (o.mode != "iid" && o.mode != "dirichlet") {
    return absl::InvalidArgumentError(absl::StrCat("unknown mode '", o.mode, "'; use iid or dirichlet"));
  }
  if (o.mode == "dirichlet" && !(o.alpha > 0)) return absl::InvalidArgumentError("--alpha must be positive");
  node::InitDcmtk();
  const std::string csv = o.labels_csv.empty() ? o.data_dir + "/labels.csv" : o.labels_csv;
  absl::StatusOr<std::string> text = ReadFile(csv, 256 << 20);
  if (!text.ok()) return text.status();

  std::vector<std::pair<std::string, int64_t>> rows;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    ++line_no;
    line = absl::StripTrailingAsciiWhitespace(line);
    if (line_no == 1) {
      if (line != "path,label") {
        return absl::InvalidArgumentError(absl::StrCat(csv, ":1: partition needs a \"path,label\" header"));
      }
      continue;
    }
    if (line.empty()) continue;
    std::vector<absl::string_view> f = absl::StrSplit(line, ',');
    int64_t label;
    if (f.size() != 2 || !absl::SimpleAtoi(f[1], &label) || label < 0) {
      return absl::InvalidArgumentError(absl::StrCat(csv, ":", line_no, ": expected path,integer-label"));
    }
    rows.emplace_back(std::string(f[0]), label);
  }

  // Group rows by patient; a file without a PatientID is its own patient.
  std::map<std::string, Patient> by_id;
  for (size_t i = 0; i < rows.size(); ++i) {
    std::string id = PatientIdOf((fs::path(o.data_dir) / rows[i].first).string());
    if (id.empty()) id = "file:" + rows[i].first;
    Patient& p = by_id[id];
    p.id = id;
    p.rows.push_back(i);
  }
  std::vector<Patient> patients;
  for (auto& [id, p] : by_id) {
    std::map<int64_t, int> counts;
    for (size_t r : p.rows) ++counts[rows[r].second];
    p.label = std::max_element(counts.begin(), counts.end(), [](const auto& a, const auto& b) {
                return a.second < b.second;
              })->first;
    patients.push_back(std::move(p));
  }

  std::mt19937_64 rng(std::stoull(crypto::Sha256Hex(absl::StrCat("partition/", o.seed)).substr(0, 16), nullptr, 16));
  std::vector<int> site_of(patients.size(), 0);
  if (o.mode == "iid") {
    std::vector<size_t> order(patients.size());
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    for (size_t k = 0; k < order.size(); ++k) site_of[order[k]] = static_cast<int>(k % o.sites);
  } else {
    std::map<int64_t, std::vector<size_t>> by_class;
    for (size_t k = 0; k < patients.size(); ++k) by_class[patients[k].label].push_back(k);
    std::gamma_distribution<double> gamma(o.alpha, 1.0);
    for (auto& [label, members] : by_class) {
      std::shuffle(members.begin(), members.end(), rng);
      std::vector<double> share(o.sites);
      double total = 0;
      for (double& x : share) total += (x = gamma(rng));
      double cumulative = 0;
      size_t start = 0;
      for (int s = 0; s < o.sites; ++s) {
        cumulative += share[s] / total;
        const size_t end =
            s + 1 == o.sites ? members.size() : static_cast<size_t>(std::llround(cumulative * members.size()));
        for (size_t k = start; k < std::min(end, members.size()); ++k) site_of[members[k]] = s;
        start = std::max(start, end);
      }
    }
  }

  PartitionResult result;
  for (int s = 0; s < o.sites; ++s) {
    result.sites.push_back(s < static_cast<int>(o.site_names.size()) ? o.site_names[s] : DefaultSiteName(s));
  }
  result.histogram.resize(o.sites);
  result.patients.assign(o.sites, 0);
  std::vector<std::string> csvs(o.sites, "path,label\n");
  for (size_t k = 0; k < patients.size(); ++k) {
    const int s = site_of[k];
    ++result.patients[s];
    for (size_t r : patients[k].rows) {
      const auto& [path, label] = rows[r];
      absl::Status st = LinkOrCopy(fs::path(o.data_dir) / path, fs::path(o.out_dir) / result.sites[s] / path);
      if (!st.ok()) return st;
      absl::StrAppend(&csvs[s], path, ",", label, "\n");
      ++result.histogram[s][label];
    }
  }
  for (int s = 0; s < o.sites; ++s) {
    absl::Status st = EnsureDirectory(absl::StrCat(o.out_dir, "/", result.sites[s]));
    if (st.ok()) st = WriteFileAtomically(absl::StrCat(o.out_dir, "/", result.sites[s], "/labels.csv"), csvs[s]);
    if (!st.ok()) return st;
  }
  return result;
}

std::string FormatHistogram(const PartitionResult& r) {
  std::set<int64_t> classes;
  for (const auto& h : r.histogram)
    for (const auto& [c, n] : h) classes.insert(c);
  std::string out = absl::StrFormat("%-14s %9s %8s", "site", "patients", "images");
  for (int64_t c : classes) absl::StrAppend(&out, absl::StrFormat(" %6s", absl::StrCat("c", c)));
  out += "\n";
  for (size_t s = 0; s < r.sites.size(); ++s) {
    int images = 0;
    for (const auto& [c, n] : r.histogram[s]) images += n;
    absl::StrAppend(&out, absl::StrFormat("%-14s %9d %8d", r.sites[s], r.patients[s], images));
    for (int64_t c : classes) {
      auto it = r.histogram[s].find(c);
      absl::StrAppend(&out, absl::StrFormat(" %6d", it == r.histogram[s].end() ? 0 : it->second));
    }
    out += "\n";
  }
  return out;
}

}  // namespace fedrad::tools
