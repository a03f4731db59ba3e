#include "node/dataset.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

namespace fedrad::node {
namespace {

std::string WriteCsv(const std::string& text) {
  std::string path = std::filesystem::temp_directory_path() / ("fedrad_labels_" + std::to_string(::getpid()) + ".csv");
  std::ofstream(path) << text;
  return path;
}

TEST(LabelsTest, ParsesRows) {
  auto table = LoadLabels(WriteCsv("path,label\na/1.dcm,0\nb/2.dcm, 1\n\n"), 2);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->key, LabelTable::Key::kPath);
  ASSERT_EQ(table->rows.size(), 2u);
  EXPECT_EQ(table->rows[1].key, "b/2.dcm");
  EXPECT_EQ(table->rows[1].label, 1);
  EXPECT_EQ(table->rows[1].line, 3);
}

TEST(LabelsTest, KeysBySopInstanceUidAndNamesClasses) {
  auto table = LoadLabels(WriteCsv("\xEF\xBB\xBFSOP_Instance_UID,label\r\n1.2.3,lesion\r\n1.2.4,normal\r\n1.2.5,1\r\n"),
                          2, {"normal", "lesion"});
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->key, LabelTable::Key::kSopInstanceUid);
  ASSERT_EQ(table->rows.size(), 3u);
  EXPECT_EQ(table->rows[0].label, 1);
  EXPECT_EQ(table->rows[1].label, 0);
  EXPECT_EQ(table->rows[2].label, 1);
  auto unknown = LoadLabels(WriteCsv("path,label\na,tumour\n"), 2, {"normal", "lesion"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find(":2: label 'tumour'"), std::string::npos);
}

TEST(LabelsTest, RejectsMalformedRowsNamingTheLine) {
  struct Case {
    const char* text;
    const char* expect;
  } cases[] = {
      {"file,class\na,0\n", ":1: the header must be"},
      {"path,label\na,0\nb,2\n", ":3: label '2'"},
      {"path,label\na,x\n", ":2: label 'x'"},
      {"path,label\na,0,1\n", ":2: expected 2 fields"},
      {"path,label\na/../../b,0\n", ":2: path must be relative"},
      {"path,label\n../etc/passwd,0\n", ":2: path must be relative"},
      {"path,label\n/abs,0\n", ":2: path must be relative"},
      {"path,label\na,0\na,1\n", ":3: 'a' is listed twice"},
      {"", "empty"},
  };
  for (const Case& c : cases) {
    auto rows = LoadLabels(WriteCsv(c.text), 2);
    ASSERT_FALSE(rows.ok()) << c.text;
    EXPECT_NE(rows.status().message().find(c.expect), std::string::npos) << c.text << " -> " << rows.status().message();
  }
  EXPECT_FALSE(LoadLabels("/nonexistent/labels.csv", 2).ok());
}

// Multilabel: one 0/1 column per label, in any order and case, or a list
// per row; both give the same targets in the model's label order.
TEST(LabelsTest, MultilabelColumnsAndListsGiveTheSameTargets) {
  const std::vector<std::string> names = {"Effusion", "Nodule", "Edema"};
  auto columns = LoadLabels(WriteCsv("path,edema,EFFUSION,Nodule,patient\na.dcm,1,0,1,p1\nb.dcm,0,0,0,p2\n"
                                     "c.dcm,0.0,1.0,0,p2\n"),
                            3, names, ModelTask::kMultilabel);
  ASSERT_TRUE(columns.ok()) << columns.status();
  ASSERT_EQ(columns->rows.size(), 3u);
  EXPECT_TRUE(columns->has_patient);
  EXPECT_EQ(columns->rows[0].targets, (std::vector<uint8_t>{0, 1, 1}));
  EXPECT_EQ(columns->rows[0].label, 1);
  EXPECT_EQ(columns->rows[1].targets, (std::vector<uint8_t>{0, 0, 0}));
  EXPECT_EQ(columns->rows[1].label, 0);
  EXPECT_EQ(columns->rows[2].targets, (std::vector<uint8_t>{1, 0, 0}));
  EXPECT_EQ(columns->rows[2].patient, "p2");
  auto lists = LoadLabels(WriteCsv("path,labels\na.dcm,Nodule|Edema\nb.dcm,\nc.dcm, Effusion \nd.dcm,1\n"), 3, names,
                          ModelTask::kMultilabel);
  ASSERT_TRUE(lists.ok()) << lists.status();
  ASSERT_EQ(lists->rows.size(), 4u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(lists->rows[i].targets, columns->rows[i].targets) << i;
  EXPECT_EQ(lists->rows[3].targets, (std::vector<uint8_t>{0, 1, 0})) << "an index names a label too";
}

TEST(LabelsTest, MultilabelRejectsWhatItCannotReadNamingTheLine) {
  const std::vector<std::string> names = {"effusion", "nodule"};
  struct Case {
    const char* text;
    const char* expect;
  } cases[] = {
      {"path,label\na,1\n", ":1: column 'label' is not one of the model's labels"},
      {"path,effusion\na,1\n", ":1: no column for label(s) nodule"},
      {"path,effusion,nodule,Effusion\na,1,0,1\n", ":1: label 'effusion' has two columns"},
      {"path,effusion,nodule\na,1,-1\n", ":2: label 'nodule' is '-1'; each label column holds 0 or 1"},
      {"path,effusion,nodule\na,1,\n", ":2: label 'nodule' is ''"},
      {"path,effusion,nodule\na,1\n", ":2: expected 3 fields, found 2"},
      {"path,labels\na,effusion|mass\n", ":2: 'mass' is not one of the model's labels"},
      {"path,labels\na,nodule|nodule\n", ":2: label 'nodule' is listed twice"},
      {"path,labels,patient\na,nodule,\n", ":2: empty patient"},
      {"", "\"path,labels\""},
  };
  for (const Case& c : cases) {
    auto rows = LoadLabels(WriteCsv(c.text), 2, names, ModelTask::kMultilabel);
    ASSERT_FALSE(rows.ok()) << c.text;
    EXPECT_NE(rows.status().message().find(c.expect), std::string::npos) << c.text << " -> " << rows.status().message();
  }
  auto unnamed = LoadLabels(WriteCsv("path,labels\na,1\n"), 2, {}, ModelTask::kMultilabel);
  EXPECT_NE(unnamed.status().message().find("needs its 2 labels named"), std::string::npos) << unnamed.status();
}

// inspect --task multilabel without names takes them from the header.
TEST(LabelsTest, LabelColumnNamesComeFromAColumnPerLabelHeader) {
  auto names = LabelColumnNames(WriteCsv("\xEF\xBB\xBFpath, Lesion ,effusion,patient\na,1,0,p\n"));
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_EQ(*names, (std::vector<std::string>{"Lesion", "effusion"}));
  auto list = LabelColumnNames(WriteCsv("path,labels\na,lesion\n"));
  EXPECT_NE(list.status().message().find("[data] class_names"), std::string::npos) << list.status();
}

ImageSet MakeSet(int patients, int images_per_patient) {
  ImageSet s;
  s.size = 2;
  for (int p = 0; p < patients; ++p) {
    for (int i = 0; i < images_per_patient; ++i) {
      s.pixels.insert(s.pixels.end(), 4, static_cast<float>(p));
      s.labels.push_back(p % 2);
      s.patients.push_back("patient-" + std::to_string(p));
    }
  }
  return s;
}

TEST(SplitTest, NoPatientOnBothSides) {
  ImageSet s = MakeSet(200, 3);
  PatientSplit split = SplitByPatient(s, 0.2, 42);
  std::set<std::string> train(split.train.patients.begin(), split.train.patients.end());
  for (const std::string& p : split.validation.patients) EXPECT_EQ(train.count(p), 0u) << p;
  EXPECT_EQ(split.train.count() + split.validation.count(), s.count());
  EXPECT_EQ(split.train_patients + split.validation_patients, 200);
  // About the requested share (binomial, 200 patients: well within 0.1..0.3).
  EXPECT_GT(split.validation_patients, 20);
  EXPECT_LT(split.validation_patients, 60);
  // Pixels travel with their labels and patients.
  for (int64_t i = 0; i < split.validation.count(); ++i) {
    EXPECT_EQ("patient-" + std::to_string(static_cast<int>(split.validation.pixels[i * 4])),
              split.validation.patients[i]);
  }
}

TEST(SplitTest, DependsOnSeedAndPatientOnlyNotOnOrder) {
  ImageSet s = MakeSet(50, 2);
  ImageSet reversed;
  reversed.size = 2;
  for (int64_t i = s.count() - 1; i >= 0; --i) reversed.Append(s, i);
  auto val = [](const PatientSplit& sp) {
    return std::set<std::string>(sp.validation.patients.begin(), sp.validation.patients.end());
  };
  EXPECT_EQ(val(SplitByPatient(s, 0.3, 7)), val(SplitByPatient(reversed, 0.3, 7)));
  EXPECT_NE(val(SplitByPatient(s, 0.3, 7)), val(SplitByPatient(s, 0.3, 8)));
}

}  // namespace
}  // namespace fedrad::node
