#pragma once
// Unit tests that need a real artifact convert one of the fixtures tests/fixtures/make_fixtures.py
// writes into $SF_FIXTURES (ctest generates them before the unit tests).
#include <string>

namespace sf::test {

// Converts fixture `name` with `scheme` into a fresh directory under the temp directory, named
// `prefix` + name + scheme + the process id (the caller removes it). Returns "" when the fixture is
// absent: $SF_FIXTURES unset, or no `must_hold` inside the fixture's directory ("" asks only for
// the directory), so the caller can skip with a message.
std::string convert_fixture(const std::string& name, const std::string& scheme, const std::string& prefix,
                            const std::string& must_hold = "");

}  // namespace sf::test
