#include "tools/synth.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "crypto/sha256.h"
#include "node/dicom_rtstruct.h"
#include "node/dicom_seg.h"
#include "node/synthetic_ct.h"

namespace fedrad::tools {

namespace {

struct SiteStyle {
  double noise_hu;
  double offset_hu;
  double prevalence;
};

SiteStyle StyleFor(int site) {
  static const SiteStyle kStyles[] = {{12, 0, 0.45}, {22, 25, 0.6}, {32, -25, 0.75}};
  SiteStyle s = kStyles[site % 3];
  s.noise_hu += 4.0 * (site / 3);
  return s;
}

void FillEllipse(std::vector<float>& hu, int n, double cx, double cy, double ax, double ay, float v) {
  for (int y = 0; y < n; ++y) {
    for (int x = 0; x < n; ++x) {
      const double dx = (x - cx) / ax, dy = (y - cy) / ay;
      if (dx * dx + dy * dy <= 1.0) hu[static_cast<size_t>(y) * n + x] = v;
    }
  }
}

}  // namespace

std::string DefaultSiteName(int index) {
  std::string suffix;
  int i = index;
  do {
    suffix.insert(suffix.begin(), static_cast<char>('a' + i % 26));
    i = i / 26 - 1;
  } while (i >= 0);
  return "hospital-" + suffix;
}

absl::Status WriteSyntheticCohort(const SynthOptions& o) {
  if (o.sites < 1 || o.patients_per_site < 1 || o.images_per_patient < 1 || o.image_size < 32 || o.image_size > 2048) {
    return absl::InvalidArgumentError("synth: sites, patients and images must be positive; size in [32, 2048]");
  }
  if (o.task != "classification" && o.task != "segmentation" && o.task != "multilabel") {
    return absl::InvalidArgumentError(
        absl::StrCat("synth: --task must be classification, segmentation or multilabel, not '", o.task, "'"));
  }
  const bool segmentation = o.task == "segmentation";
  const bool multilabel = o.task == "multilabel";
  if (o.rtstruct && !segmentation) {
    return absl::InvalidArgumentError("synth: --rtstruct applies to --task segmentation");
  }
  const int n = o.image_size;
  for (int site = 0; site < o.sites; ++site) {
    const std::string name = site < static_cast<int>(o.site_names.size()) ? o.site_names[site] : DefaultSiteName(site);
    const SiteStyle style = StyleFor(site);
    std::mt19937_64 rng(
        std::stoull(crypto::Sha256Hex(absl::StrCat(o.seed, "/site/", name)).substr(0, 16), nullptr, 16));
    std::uniform_real_distribution<double> uni(0.0, 1.0);
    std::normal_distribution<double> noise(0.0, style.noise_hu);
    const std::string site_dir = absl::StrCat(o.out_dir, "/", name);
    absl::Status s = EnsureDirectory(site_dir);
    if (!s.ok()) return s;
    std::string labels = multilabel ? absl::StrCat("path,", absl::StrJoin(kSynthFindings, ","), "\n") : "path,label\n";
    int positives = 0, images = 0, effusions = 0, clips = 0;
    for (int p = 0; p < o.patients_per_site; ++p) {
      const std::string pid = absl::StrFormat("%s-P%04d", name, p + 1);
      const std::string study = crypto::UidFromKey(absl::StrCat(o.seed, "/study/", pid));
      const std::string series = crypto::UidFromKey(absl::StrCat(o.seed, "/series/", pid));
      const bool has_lesion = uni(rng) < style.prevalence;
      // Body and anatomy per patient.
      const double cx = n / 2.0 + (uni(rng) - 0.5) * n * 0.06;
      const double cy = n / 2.0 + (uni(rng) - 0.5) * n * 0.06;
      const double ax = n * (0.36 + 0.06 * uni(rng));
      const double ay = n * (0.26 + 0.05 * uni(rng));
      const float tissue = static_cast<float>(35 + 15 * uni(rng) + style.offset_hu);
      // The lesion spans a range of slices; it is visible where its radius is large enough.
      const double lesion_z = (o.images_per_patient - 1) * uni(rng);
      const double lesion_extent = o.images_per_patient * (0.3 + 0.3 * uni(rng));
      const double lesion_r = n * (0.06 + 0.04 * uni(rng));
      const double angle = uni(rng) * 2 * M_PI;
      const double dist = 0.25 + 0.45 * uni(rng);
      const double lx = cx + std::cos(angle) * ax * dist;
      const double ly = cy + std::sin(angle) * ay * dist;
      const double lesion_hu = 130 + 50 * uni(rng) + style.offset_hu;
      // Multilabel's other findings, per patient (drawn only then: the
      // other tasks' cohorts stay byte-identical): fluid filling the base
      // of the left lung, and a metal clip in the soft tissue of the anterior
      // chest wall (the upper half, away from the spine, which is as bright
      // once windowed).
      bool effusion = false, clip = false;
      double clip_x = 0, clip_y = 0;
      if (multilabel) {
        effusion = uni(rng) < 0.35;
        clip = uni(rng) < 0.3;
        const double a = M_PI * (1.15 + 0.7 * uni(rng));
        clip_x = cx + std::cos(a) * ax * 0.85;
        clip_y = cy + std::sin(a) * ay * 0.85;
        effusions += effusion;
        clips += clip;
      }
      const std::string patient_dir = absl::StrCat(site_dir, "/", pid);
      s = EnsureDirectory(patient_dir);
      if (!s.ok()) return s;
      node::SegWrite seg;
      seg.segment_labels = {"lesion"};
      seg.automatic = false;  // the ground truth, as if drawn
      seg.series_description = "lesion ground truth";
      seg.sop_instance_uid = crypto::UidFromKey(absl::StrCat(o.seed, "/seg/", pid));
      seg.series_instance_uid = crypto::UidFromKey(absl::StrCat(o.seed, "/seg-series/", pid));
      seg.content_date_time = "20260101120000";  // byte-identical reruns
      node::RtStructWrite rt;
      rt.roi_names = {"lesion"};
      rt.sop_instance_uid = crypto::UidFromKey(absl::StrCat(o.seed, "/rtstruct/", pid));
      rt.series_instance_uid = crypto::UidFromKey(absl::StrCat(o.seed, "/rtstruct-series/", pid));
      for (int k = 0; k < o.images_per_patient; ++k) {
        std::vector<float> hu(static_cast<size_t>(n) * n, -1000.0f);
        const double shrink = 1.0 - 0.03 * std::abs(k - (o.images_per_patient - 1) / 2.0);
        FillEllipse(hu, n, cx, cy, ax * shrink, ay * shrink, tissue);
        FillEllipse(hu, n, cx - ax * 0.45, cy - ay * 0.1, ax * 0.3, ay * 0.55, -850.0f);
        FillEllipse(hu, n, cx + ax * 0.45, cy - ay * 0.1, ax * 0.3, ay * 0.55, -850.0f);
        FillEllipse(hu, n, cx, cy + ay * 0.7, n * 0.05, n * 0.05, static_cast<float>(450 + style.offset_hu));
        if (effusion) {
          // The lung's lower half, as fluid (water-dense).
          const double lx0 = cx - ax * 0.45, ly0 = cy - ay * 0.1, rx = ax * 0.3, ry = ay * 0.55;
          for (int y = static_cast<int>(ly0); y < n; ++y) {
            for (int x = 0; x < n; ++x) {
              const double u = (x - lx0) / rx, v = (y - ly0) / ry;
              if (u * u + v * v <= 1) hu[static_cast<size_t>(y) * n + x] = static_cast<float>(15 + style.offset_hu);
            }
          }
        }
        // A surgical clip: a bright bar, longer than the spine is wide and
        // more than a pixel thick at 32 x 32.
        if (clip) FillEllipse(hu, n, clip_x, clip_y, n * 0.12, n * 0.03, 2500.0f);
        double r = 0;
        if (has_lesion) {
          const double dz = (k - lesion_z) / lesion_extent;
          r = dz * dz < 1 ? lesion_r * std::sqrt(1 - dz * dz) : 0;
        }
        // Label only slices that cut the lesion well; the rest show none of it.
        const bool visible = r >= 0.6 * lesion_r;
        if (!visible) r = 0;
        if (visible) {
          for (int y = 0; y < n; ++y) {
            for (int x = 0; x < n; ++x) {
              // A disc with a soft rim: solid to 0.75 r, fading out by 1.25 r.
              const double d = std::sqrt((x - lx) * (x - lx) + (y - ly) * (y - ly)) / r;
              if (d < 1.25) {
                float& v = hu[static_cast<size_t>(y) * n + x];
                const double w = std::min(1.0, (1.25 - d) / 0.5);
                v = static_cast<float>(v * (1 - w) + lesion_hu * w);
              }
            }
          }
        }
        for (float& v : hu) v += static_cast<float>(noise(rng));
        const std::string rel = absl::StrFormat("%s/%02d.dcm", pid, k + 1);
        node::CtSlice slice;
        slice.size = n;
        slice.hu = std::move(hu);
        slice.patient_id = pid;
        slice.study_uid = study;
        slice.series_uid = series;
        slice.frame_of_reference_uid = crypto::UidFromKey(absl::StrCat(o.seed, "/frame-of-reference/", pid));
        slice.sop_uid = crypto::UidFromKey(absl::StrCat(o.seed, "/sop/", pid, "/", k));
        slice.instance = k + 1;
        slice.accession_number = absl::StrFormat("A%07d", p + 1);
        s = node::WriteCtSlice(slice, absl::StrCat(site_dir, "/", rel));
        if (!s.ok()) return s;
        if (segmentation) {
          seg.source_paths.push_back(absl::StrCat(site_dir, "/", rel));
          rt.source_paths.push_back(absl::StrCat(site_dir, "/", rel));
          if (visible) {
            node::RtStructWrite::Contour contour{1, slice.sop_uid, {}};
            for (int v = 0; v < 36; ++v) {
              const double a = 2 * M_PI * v / 36;
              contour.points.emplace_back(lx + r * std::cos(a), ly + r * std::sin(a));
            }
            rt.contours.push_back(std::move(contour));
          }
          if (visible) {
            // The lesion is the disc up to its radius (the rim's midpoint).
            node::SegFrame frame{slice.sop_uid, 0, 1, std::vector<uint8_t>(static_cast<size_t>(n) * n, 0)};
            for (int y = 0; y < n; ++y) {
              for (int x = 0; x < n; ++x) {
                frame.mask[static_cast<size_t>(y) * n + x] = (x - lx) * (x - lx) + (y - ly) * (y - ly) <= r * r;
              }
            }
            seg.frames.push_back(std::move(frame));
          }
        }
        absl::StrAppend(&labels, rel, ",", visible ? 1 : 0);
        if (multilabel) absl::StrAppend(&labels, ",", effusion ? 1 : 0, ",", clip ? 1 : 0);
        absl::StrAppend(&labels, "\n");
        positives += visible;
        ++images;
      }
      if (segmentation) {
        s = node::WriteSegmentation(seg, absl::StrCat(patient_dir, "/seg.dcm"));
        if (!s.ok()) return s;
        if (o.rtstruct) {
          s = node::WriteRtStruct(rt, absl::StrCat(patient_dir, "/rtstruct.dcm"));
          if (!s.ok()) return s;
        }
      }
    }
    // Segmentation's labels are the SEG objects, which the node finds itself.
    if (!segmentation) {
      s = WriteFileAtomically(site_dir + "/labels.csv", labels);
      if (!s.ok()) return s;
    }
    spdlog::info("synth: {}: {} patients, {} images, {} with a lesion (noise {} HU, offset {} HU)", name,
                 o.patients_per_site, images, positives, style.noise_hu, style.offset_hu);
    if (multilabel) {
      spdlog::info("synth: {}: {} patients with an effusion, {} with a clip", name, effusions, clips);
    }
  }
  return absl::OkStatus();
}

}  // namespace fedrad::tools
