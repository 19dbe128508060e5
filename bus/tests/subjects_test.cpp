#include <doctest/doctest.h>

#include "cove/bus/subjects.hpp"

using namespace cove::bus;

TEST_CASE("valid_id") {
  CHECK(valid_id("cvm-1"));
  CHECK(valid_id("0a9z-"));
  CHECK(valid_id(std::string(64, 'a')));
  CHECK_FALSE(valid_id(std::string(65, 'a')));
  CHECK_FALSE(valid_id(""));
  CHECK_FALSE(valid_id("a.b"));
  CHECK_FALSE(valid_id("*"));
  CHECK_FALSE(valid_id(">"));
  CHECK_FALSE(valid_id("Abc"));
  CHECK_FALSE(valid_id("a b"));
  CHECK_FALSE(valid_id("a_b"));
  CHECK_FALSE(valid_id(std::string_view("a\0b", 3)));
}

TEST_CASE("cvm_subject and parsing") {
  CHECK(cvm_subject("cvm-1", "status") == "cove.v1.cvm.cvm-1.status");
  CHECK(cvm_subject("cvm-1", "result.chunk") == "cove.v1.cvm.cvm-1.result.chunk");
  CHECK_FALSE(cvm_subject("a.b", "status"));
  CHECK_FALSE(cvm_subject("*", "status"));
  CHECK_FALSE(cvm_subject("cvm-1", ""));
  CHECK_FALSE(cvm_subject("cvm-1", "a..b"));
  CHECK_FALSE(cvm_subject("cvm-1", ">"));
  CHECK_FALSE(cvm_subject("cvm-1", "x.*"));
  CHECK_FALSE(cvm_subject("cvm-1", "status."));

  CHECK(cvm_id_of("cove.v1.cvm.cvm-1.status") == "cvm-1");
  CHECK(cvm_leaf_of("cove.v1.cvm.cvm-1.result.chunk") == "result.chunk");
  CHECK(cvm_id_of("cove.v1.cvm.cvm-1") == "cvm-1");
  CHECK_FALSE(cvm_leaf_of("cove.v1.cvm.cvm-1"));
  CHECK_FALSE(cvm_id_of("cove.v1.manager.create"));
  CHECK_FALSE(cvm_id_of("cove.v1.cvm.*.status"));
  CHECK_FALSE(cvm_id_of("cove.v1.cvm..status"));
  CHECK_FALSE(cvm_id_of("cove.v1.cvm.BAD.status"));
}

TEST_CASE("service and event subjects") {
  CHECK(subjects::manager_create == "cove.v1.manager.create");
  CHECK(subjects::manager_list == "cove.v1.manager.list");
  CHECK(subjects::manager_info == "cove.v1.manager.info");
  CHECK(subjects::manager_remove == "cove.v1.manager.remove");
  CHECK(subjects::computation_start == "cove.v1.computation.start");
  CHECK(subjects::computation_stop == "cove.v1.computation.stop");
  CHECK(subjects::computation_status == "cove.v1.computation.status");
  CHECK(events_subject("cvm") == "cove.v1.events.cvm");
  CHECK_FALSE(events_subject("*"));
  CHECK_FALSE(events_subject(""));
}
