// The privacy unit: which files count as whose patient, and what is refused
// or warned about when PatientID cannot be trusted.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "common/scratch_dir.h"
#include "node/dataset.h"
#include "node/test_dicom.h"

namespace fedrad::node {
namespace {

struct File {
  std::string name;
  std::string patient_id;
  bool has_patient_id = true;
  std::string issuer;
  std::string study;
  std::string pseudonym;  // a labels.csv patient cell, when the table has the column
};

// Writes the files and a labels.csv (with a patient column if any file has a
// pseudonym), and loads them.
absl::StatusOr<ImageSet> Load(const ScratchDir& dir, const std::vector<File>& files, bool require_key,
                              LoadReport* report) {
  bool pseudonyms = false;
  for (const File& f : files) pseudonyms |= !f.pseudonym.empty();
  std::ofstream csv((dir.path() / "labels.csv").string());
  csv << (pseudonyms ? "path,label,patient\n" : "path,label\n");
  int uid = 1;
  for (const File& f : files) {
    testing::TestImage im;
    im.patient_id = f.patient_id;
    im.has_patient_id = f.has_patient_id;
    im.issuer_of_patient_id = f.issuer;
    im.study_instance_uid = f.study;
    im.sop_instance_uid = "2.25.1000" + std::to_string(uid++);
    EXPECT_TRUE(testing::WriteTestImage(im, (dir.path() / f.name).string()));
    csv << f.name << ",0" << (pseudonyms ? "," + f.pseudonym : "") << "\n";
  }
  csv.close();
  DatasetSpec spec;
  spec.data_dir = dir.path().string();
  spec.labels_csv = (dir.path() / "labels.csv").string();
  spec.require_patient_key = require_key;
  spec.preprocess.output_size = 8;
  return LoadImageSet(spec, report);
}

bool AnyContains(const std::vector<std::string>& lines, const std::string& part) {
  for (const std::string& l : lines) {
    if (l.find(part) != std::string::npos) return true;
  }
  return false;
}

TEST(PatientKeyTest, FilesWithoutAPatientAreRefusedUnderPatientLevelDp) {
  ScratchDir dir("patient_key_blank");
  const std::vector<File> files = {{"a.dcm", "P1", true, "", "1.2.1"},
                                   {"b.dcm", "P1", true, "", "1.2.1"},
                                   {"blank.dcm", "", true, "", "1.2.2"},
                                   {"missing.dcm", "", false, "", "1.2.3"},
                                   {"spaces.dcm", "   ", true, "", "1.2.4"}};
  LoadReport r;
  absl::StatusOr<ImageSet> set = Load(dir, files, /*require_key=*/true, &r);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->count(), 2);
  EXPECT_EQ(r.patients, 1);
  EXPECT_EQ(r.files_without_patient_key, 3);
  EXPECT_EQ(r.skipped[kNoPatientKey], 3);
  EXPECT_EQ(r.unusable["missing.dcm"], kNoPatientKey);
  std::vector<std::string> warnings = PatientKeyWarnings(r, true);
  EXPECT_TRUE(AnyContains(warnings, "3 file(s) have no patient key")) << warnings.size();
  EXPECT_TRUE(AnyContains(warnings, "refused under patient-level DP"));

  // Without patient-level DP each is its own unit, and the report says so.
  set = Load(dir, files, /*require_key=*/false, &r);
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(set->count(), 5);
  EXPECT_EQ(r.patients, 4);
  EXPECT_EQ(r.files_without_patient_key, 3);
  EXPECT_TRUE(AnyContains(PatientKeyWarnings(r, false), "each counted as its own patient"));
}

TEST(PatientKeyTest, AConstantPatientIdIsWarnedAbout) {
  ScratchDir dir("patient_key_constant");
  std::vector<File> files;
  for (int i = 0; i < 24; ++i)
    files.push_back({"f" + std::to_string(i) + ".dcm", "ANONYMOUS", true, "", "1.3." + std::to_string(i)});
  LoadReport r;
  ASSERT_TRUE(Load(dir, files, true, &r).ok());
  EXPECT_EQ(r.patients, 1);
  EXPECT_TRUE(AnyContains(PatientKeyWarnings(r, true), "one patient key covers 24 of 24 images"));
  // 24 patients of one image each: nothing to say.
  for (int i = 0; i < 24; ++i) files[i].patient_id = "P" + std::to_string(i);
  ASSERT_TRUE(Load(dir, files, true, &r).ok());
  EXPECT_EQ(r.patients, 24);
  EXPECT_TRUE(PatientKeyWarnings(r, true).empty());
}

TEST(PatientKeyTest, PerFileIdsInSharedStudiesAreWarnedAboutAndAPseudonymColumnFixesThem) {
  ScratchDir dir("patient_key_pseudonym");
  // De-identified per file: ten images of five studies, each with its own ID.
  std::vector<File> files;
  for (int i = 0; i < 10; ++i) {
    files.push_back(
        {"f" + std::to_string(i) + ".dcm", "DEID-" + std::to_string(i), true, "", "1.4." + std::to_string(i / 2)});
  }
  LoadReport r;
  ASSERT_TRUE(Load(dir, files, true, &r).ok());
  EXPECT_EQ(r.patients, 10);
  EXPECT_EQ(r.studies, 5);
  EXPECT_EQ(r.studies_with_several_patients, 5);
  EXPECT_TRUE(AnyContains(PatientKeyWarnings(r, true), "5 of 5 stud(ies) hold images of more than one patient"));
  // The site's pseudonym map names the true patients.
  for (int i = 0; i < 10; ++i) files[i].pseudonym = "subject-" + std::to_string(i / 2);
  absl::StatusOr<ImageSet> set = Load(dir, files, true, &r);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(r.patients, 5);
  EXPECT_EQ(DistinctPatients(*set), 5);
  EXPECT_EQ(r.studies_with_several_patients, 0);
  EXPECT_TRUE(PatientKeyWarnings(r, true).empty());
  // ... which also gives files without a PatientID their patient.
  files[3].patient_id = "";
  files[3].has_patient_id = false;
  set = Load(dir, files, true, &r);
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(set->count(), 10);
  EXPECT_EQ(r.files_without_patient_key, 0);
}

TEST(PatientKeyTest, TheIssuerIsPartOfTheKey) {
  ScratchDir dir("patient_key_issuer");
  LoadReport r;
  ASSERT_TRUE(
      Load(dir, {{"a.dcm", "123", true, "HOSP-A", "1.5.1"}, {"b.dcm", "123", true, "HOSP-B", "1.5.2"}}, true, &r).ok());
  EXPECT_EQ(r.patients, 2);
  ASSERT_TRUE(
      Load(dir, {{"a.dcm", "123", true, "HOSP-A", "1.5.1"}, {"b.dcm", "123", true, "HOSP-A", "1.5.2"}}, true, &r).ok());
  EXPECT_EQ(r.patients, 1);
  DicomFacts facts;
  facts.patient_id = "123";
  EXPECT_EQ(PatientKey(facts, nullptr), "123");
  facts.issuer_of_patient_id = "HOSP-A";
  EXPECT_NE(PatientKey(facts, nullptr), "123");
  LabelTable::Row row;
  row.patient = "pseudonym-9";
  EXPECT_EQ(PatientKey(facts, &row), "pseudonym-9");
}

TEST(PatientKeyTest, APatientColumnMustNameEveryPatient) {
  ScratchDir dir("patient_key_csv");
  const std::string csv = (dir.path() / "l.csv").string();
  std::ofstream(csv) << "path,label,patient\na.dcm,0,p1\nb.dcm,1,\n";
  absl::StatusOr<LabelTable> t = LoadLabels(csv, 2);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find(":3: empty patient"), std::string::npos) << t.status();
  std::ofstream(csv) << "sop_instance_uid,label,patient\n1.2,0,p1\n";
  t = LoadLabels(csv, 2);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(t->has_patient);
  EXPECT_EQ(t->rows[0].patient, "p1");
  std::ofstream(csv) << "path,label,patient\na.dcm,0\n";
  EXPECT_NE(LoadLabels(csv, 2).status().message().find(":2: expected 3 fields"), std::string::npos);
}

}  // namespace
}  // namespace fedrad::node
