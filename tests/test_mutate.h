#pragma once
// Mutation of request bodies for the parsers' robustness tests.
#include <random>
#include <string>

namespace da::test {

// `body` with 1-8 random edits (replace, delete, insert, duplicate a span).
inline std::string Mutate(std::string body, std::mt19937& rng) {
  const std::string alphabet = "{}[]\",:0123456789.-eE tfnulaINFinputsdatashape\\";
  const int edits = 1 + static_cast<int>(rng() % 8);
  for (int e = 0; e < edits && !body.empty(); ++e) {
    size_t at = rng() % body.size();
    switch (rng() % 4) {
      case 0:
        body[at] = alphabet[rng() % alphabet.size()];
        break;
      case 1:
        body.erase(at, 1 + rng() % 16);
        break;
      case 2:
        body.insert(at, 1, alphabet[rng() % alphabet.size()]);
        break;
      case 3:
        body.insert(at, body.substr(rng() % body.size(), rng() % 32));
        break;
    }
  }
  return body;
}

}  // namespace da::test
