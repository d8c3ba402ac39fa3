#pragma once
// What shardforge says on stderr besides its one error line. Messages quote names read from files
// and given by users; printable() keeps each message one line (valid UTF-8 passes; control
// characters and invalid bytes become \xNN), so a crafted name cannot forge a second line.
#include <string>

namespace sf {

std::string printable(const std::string& s);
// "shardforge: warning: MESSAGE" on stderr, MESSAGE made printable.
void warn(const std::string& message);

}  // namespace sf
