#pragma once
// Errors that reach the user: bad files, flags, HTTP bodies, contexts.
// The CLI turns a UserError into one line on stderr and exit code 2.
#include <stdexcept>
#include <string>

namespace da {

class UserError : public std::runtime_error {
 public:
  explicit UserError(const std::string& what) : std::runtime_error(what) {}
};

// A UserError from an HTTP request: the service answers `status` with
// {"error": what()}.
class HttpError : public UserError {
 public:
  HttpError(int status, const std::string& what) : UserError(what), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

}  // namespace da
