// Declarations only (see README.md). The inline `ProcessGroupGloo::setTimeout` mentions
// `Context::setTimeout`; it is never emitted in our code (the class's vtable lives in libtorch).
#pragma once
#include <chrono>

namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
} // namespace gloo
