#include "engine/token_stream.h"

#include <algorithm>

namespace vlc::engine {

TextAssembler::TextAssembler(const Tokenizer* tok, std::vector<std::string> stop)
    : detok_(tok), stop_(std::move(stop)) {
  for (const auto& s : stop_) max_stop_ = std::max(max_stop_, s.size());
}

bool TextAssembler::Push(int id) {
  if (stopped_) return false;
  const size_t before = text_.size();
  text_ += detok_.Push(id);
  if (!stop_.empty() && text_.size() > before) {
    // A stop string may straddle the old end: search from where it could begin.
    const size_t from = before >= max_stop_ ? before - max_stop_ + 1 : 0;
    size_t cut = std::string::npos;
    for (const auto& s : stop_) cut = std::min(cut, text_.find(s, from));
    if (cut != std::string::npos) {
      text_.resize(cut);
      stopped_ = true;
    }
  }
  return !stopped_;
}

void TextAssembler::Finish() {
  if (!stopped_) text_ += detok_.Flush();
  finished_ = true;
}

std::string TextAssembler::TakeDelta() {
  size_t limit = text_.size();
  if (!stopped_ && !finished_) {
    // Hold back the shortest tail that is still the beginning of some stop string.
    const size_t start = std::max(emitted_, text_.size() >= max_stop_ ? text_.size() - max_stop_ + 1
                                                                         : size_t{0});
    for (size_t i = start; i < text_.size(); ++i) {
      bool prefix = false;
      for (const auto& s : stop_) {
        if (s.compare(0, text_.size() - i, text_, i, std::string::npos) == 0) prefix = true;
      }
      if (prefix) {
        limit = i;
        break;
      }
    }
  }
  if (limit <= emitted_) return "";
  std::string delta = text_.substr(emitted_, limit - emitted_);
  emitted_ = limit;
  return delta;
}

TokenStream::TokenStream(const Tokenizer* tok, std::vector<std::string> stop, const Clock* clock,
                         Clock::TimePoint start, MetricsSink* metrics, DeltaFn on_delta)
    : text_(tok, std::move(stop)),
      clock_(clock),
      start_(start),
      last_(start),
      metrics_(metrics),
      on_delta_(std::move(on_delta)) {}

bool TokenStream::Push(int token) {
  const auto now = clock_->Now();
  if (ttft_ms_ < 0) {
    ttft_ms_ = SecondsBetween(start_, now) * 1e3;
    if (metrics_) metrics_->ObserveTtft(ttft_ms_ / 1e3);
  } else if (metrics_) {
    metrics_->ObserveInterToken(SecondsBetween(last_, now));
  }
  last_ = now;
  ++generated_;
  const bool more = text_.Push(token);
  pending_ids_.push_back(token);
  std::string delta = text_.TakeDelta();
  if (!delta.empty() && on_delta_) {
    std::vector<int> ids;
    ids.swap(pending_ids_);
    on_delta_(std::move(delta), std::move(ids));
  }
  return more;
}

void TokenStream::Finish() {
  text_.Finish();
  // A sequence that ended at once (EOS as its first token) never pushed: its first token is now.
  if (ttft_ms_ < 0) ttft_ms_ = SecondsBetween(start_, clock_->Now()) * 1e3;
}

std::string TokenStream::TakeRest() { return text_.TakeDelta(); }

std::vector<int> TokenStream::TakePendingIds() {
  std::vector<int> ids;
  ids.swap(pending_ids_);
  return ids;
}

}  // namespace vlc::engine
