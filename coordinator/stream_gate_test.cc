#include "coordinator/stream_gate.h"

#include <gtest/gtest.h>

#include <vector>

namespace fedrad::coordinator {
namespace {

// The limit of max_concurrent_streams: the stream past it waits, unread,
// until one admitted before it leaves, and then takes over its slot.
TEST(StreamGateTest, StreamsBeyondTheLimitWaitTheirTurnInArrivalOrder) {
  StreamGate gate(2);
  std::vector<std::string> admitted_later;
  auto admit = [&](const std::string& who) { return [&, who] { admitted_later.push_back(who); }; };
  int keys[5];
  EXPECT_EQ(gate.Enter("a", &keys[0], admit("a")), StreamGate::Entry::kAdmitted);
  EXPECT_EQ(gate.Enter("b", &keys[1], admit("b")), StreamGate::Entry::kAdmitted);
  EXPECT_EQ(gate.Enter("c", &keys[2], admit("c")), StreamGate::Entry::kWaiting) << "the limit is 2";
  EXPECT_EQ(gate.Enter("d", &keys[3], admit("d")), StreamGate::Entry::kWaiting);
  EXPECT_EQ(gate.Enter("a", &keys[4], admit("a again")), StreamGate::Entry::kDuplicate) << "one stream per site";
  EXPECT_TRUE(admitted_later.empty());
  gate.Leave("a", /*admitted=*/true);
  EXPECT_EQ(admitted_later, std::vector<std::string>{"c"}) << "the first to wait takes the freed slot";
  // d gives up while waiting: it is not admitted later, and frees its site.
  EXPECT_TRUE(gate.Withdraw(&keys[3]));
  gate.Leave("d", /*admitted=*/false);
  EXPECT_FALSE(gate.Withdraw(&keys[3]));
  gate.Leave("b", true);
  EXPECT_EQ(admitted_later, std::vector<std::string>{"c"});
  // One slot is free now (c holds the other): the next is admitted at once.
  EXPECT_EQ(gate.Enter("d", &keys[3], admit("d")), StreamGate::Entry::kAdmitted);
  EXPECT_EQ(gate.Enter("e", &keys[4], admit("e")), StreamGate::Entry::kWaiting);
  EXPECT_NE(gate.Use().find("at most 2 at once (limit 2), 3 waited"), std::string::npos) << gate.Use();
}

}  // namespace
}  // namespace fedrad::coordinator
