// The caller's side of one generation: generated ids become text deltas (never past a stop
// string, never a split character), each delta is pushed to the caller's channel as it becomes
// final, and the first-token and inter-token times are measured and reported.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/clock.h"
#include "engine/metrics_sink.h"
#include "engine/tokenizer.h"

namespace vlc::engine {

// Turns generated ids into text, ending it before the first stop string and holding back any tail
// that could still become one, so streamed text never has to be taken back.
class TextAssembler {
 public:
  TextAssembler(const Tokenizer* tok, std::vector<std::string> stop);
  // Adds a token; returns false once a stop string has appeared.
  bool Push(int id);
  // Text that became final since the last call.
  std::string TakeDelta();
  // Ends the text: everything not cut by a stop string becomes final.
  void Finish();
  const std::string& text() const { return text_; }

 private:
  StreamingDetokenizer detok_;
  std::vector<std::string> stop_;
  size_t max_stop_ = 0;
  std::string text_;     // all text so far (cut at a stop string once one appears)
  size_t emitted_ = 0;   // bytes of text_ handed out by TakeDelta
  bool stopped_ = false;
  bool finished_ = false;
};

class TokenStream {
 public:
  // Receives each text delta with the ids it came from.
  using DeltaFn = std::function<void(std::string text, std::vector<int> ids)>;

  // `start`: when the request arrived (its first-token time counts from there).
  TokenStream(const Tokenizer* tok, std::vector<std::string> stop, const Clock* clock,
              Clock::TimePoint start, MetricsSink* metrics, DeltaFn on_delta);

  // A sampled token; returns false once a stop string has appeared.
  bool Push(int token);
  // Ends the text; the rest of it (and the ids not sent yet) go out with the final event.
  void Finish();
  std::string TakeRest();
  std::vector<int> TakePendingIds();

  const std::string& text() const { return text_.text(); }
  // Milliseconds from the start to the first token; < 0 before it.
  double ttft_ms() const { return ttft_ms_; }
  int64_t generated() const { return generated_; }

 private:
  TextAssembler text_;
  const Clock* clock_;
  Clock::TimePoint start_, last_;
  MetricsSink* metrics_;
  DeltaFn on_delta_;
  double ttft_ms_ = -1;
  int64_t generated_ = 0;
  std::vector<int> pending_ids_;  // tokens whose text is not out yet
};

}  // namespace vlc::engine
