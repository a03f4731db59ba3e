#include "common/sqlite.h"

#include <gtest/gtest.h>

#include <filesystem>

namespace fedrad {
namespace {

class SqliteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = std::filesystem::temp_directory_path() / ("fedrad_sqlite_" + std::to_string(::getpid()) + ".db");
    std::filesystem::remove(path_);
  }
  void TearDown() override {
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path_ + suffix);
  }
  std::string path_;
};

TEST_F(SqliteTest, ExecuteQueryAndTypes) {
  auto db = Database::Open(path_);
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_TRUE((*db)->ExecScript("CREATE TABLE t(a INTEGER, b REAL, c TEXT)").ok());
  ASSERT_TRUE((*db)->Execute("INSERT INTO t VALUES(?1, ?2, ?3)", {int64_t{5}, 2.5, std::string("x'y")}).ok());
  ASSERT_TRUE((*db)->Execute("INSERT INTO t VALUES(?1, ?2, ?3)", {nullptr, nullptr, nullptr}).ok());
  auto rows = (*db)->Query("SELECT a, b, c FROM t ORDER BY rowid");
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ(AsInt((*rows)[0][0]), 5);
  EXPECT_DOUBLE_EQ(AsDouble((*rows)[0][1]), 2.5);
  EXPECT_EQ(AsText((*rows)[0][2]), "x'y");
  EXPECT_TRUE(std::holds_alternative<std::nullptr_t>((*rows)[1][0]));
  auto mode = (*db)->Query("PRAGMA journal_mode");
  EXPECT_EQ(AsText((*mode)[0][0]), "wal");
}

TEST_F(SqliteTest, UncommittedTransactionRollsBackAndCommittedSurvivesReopen) {
  {
    auto db = Database::Open(path_);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->ExecScript("CREATE TABLE t(a INTEGER)").ok());
    {
      auto tx = (*db)->Begin();
      ASSERT_TRUE(tx.ok());
      ASSERT_TRUE((*db)->Execute("INSERT INTO t VALUES(1)").ok());
    }  // rolled back
    auto tx = (*db)->Begin();
    ASSERT_TRUE((*db)->Execute("INSERT INTO t VALUES(2)").ok());
    ASSERT_TRUE(tx->Commit().ok());
  }
  auto db = Database::Open(path_);
  auto rows = (*db)->Query("SELECT a FROM t");
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ(AsInt((*rows)[0][0]), 2);
}

TEST_F(SqliteTest, ErrorsNameTheDatabase) {
  auto db = Database::Open(path_);
  absl::Status s = (*db)->Execute("SELECT * FROM missing_table");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(path_), std::string::npos);
  EXPECT_FALSE(Database::Open("/nonexistent/dir/x.db").ok());
}

}  // namespace
}  // namespace fedrad
