#include <doctest/doctest.h>

#include "cove/errors.hpp"
#include "cove/expected.hpp"

TEST_CASE("errc round-trips through the wire number and unknown numbers decode as unknown") {
  CHECK(cove::errc_from_wire(6) == cove::errc::hash_mismatch);
  CHECK(cove::errc_from_wire(200) == cove::errc::unknown);
  std::error_code ec = cove::errc::unauthorized;
  CHECK(ec.message() == "unauthorized");
  CHECK(std::string(ec.category().name()) == "cove");
}

TEST_CASE("expected carries a value or an error") {
  cove::expected<int> good = 4;
  REQUIRE(good);
  CHECK(*good == 4);
  cove::expected<int> bad = cove::make_error(cove::errc::not_found, "no cvm 'x'");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().to_string() == "not_found: no cvm 'x'");
}
