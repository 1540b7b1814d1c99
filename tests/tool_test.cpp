#include "support.hpp"
TEST_CASE("placeholder") { CHECK(true); }
