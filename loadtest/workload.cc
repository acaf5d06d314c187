#include "loadtest/workload.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/fs.h"
#include "tools/vqa/vqa.h"

namespace vlc::loadtest {

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kImage:
      return "image";
    case Kind::kVideo:
      return "video";
    case Kind::kSession:
      return "session";
  }
  return "?";
}

namespace {

absl::StatusOr<Kind> ParseKind(const std::string& name) {
  if (name == "image") return Kind::kImage;
  if (name == "video") return Kind::kVideo;
  if (name == "session") return Kind::kSession;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown workload kind \"", name, "\": use image, video or session"));
}

absl::Status CheckScenario(const Scenario& s) {
  if (!(s.weight > 0)) return absl::InvalidArgumentError("the weight must be positive");
  if (s.frames < 1 || s.frames > vqa::kMaxFrames) {
    return absl::InvalidArgumentError(
        absl::StrCat("frames must be in [1, ", vqa::kMaxFrames, "], got ", s.frames));
  }
  if (s.turns < 1) return absl::InvalidArgumentError("a session needs at least one turn");
  if (s.think_s < 0) return absl::InvalidArgumentError("the think time must not be negative");
  if (s.max_new_tokens < 1) return absl::InvalidArgumentError("max_new_tokens must be >= 1");
  if (s.kv_budget < 0 || s.kv_budget > 1) {
    return absl::InvalidArgumentError("the KV budget must be in (0, 1]");
  }
  if (!s.answers.empty() && s.answers.size() != s.prompts.size()) {
    return absl::InvalidArgumentError("give one answer per prompt, or none");
  }
  if (s.kind == Kind::kVideo && !s.image_paths.empty() && !s.video_path.empty()) {
    return absl::InvalidArgumentError("give a video or pictures, not both");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<Scenario>> ParseMix(const std::string& spec, const Scenario& base,
                                               int video_frames, int session_frames) {
  std::vector<Scenario> mix;
  for (absl::string_view entry : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    std::vector<std::string> parts = absl::StrSplit(entry, ':');
    Scenario s = base;
    auto kind = ParseKind(std::string(absl::StripAsciiWhitespace(parts[0])));
    if (!kind.ok()) return kind.status();
    s.kind = *kind;
    s.name = KindName(s.kind);
    s.frames = s.kind == Kind::kVideo ? video_frames
               : s.kind == Kind::kSession ? session_frames
                                          : 1;
    if (parts.size() > 2 || (parts.size() == 2 && !absl::SimpleAtod(parts[1], &s.weight))) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad mix entry \"", entry, "\": write KIND or KIND:WEIGHT"));
    }
    if (absl::Status st = CheckScenario(s); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("mix entry \"", entry, "\": ", st.message()));
    }
    mix.push_back(std::move(s));
  }
  if (mix.empty()) return absl::InvalidArgumentError("the workload mix is empty");
  return mix;
}

absl::StatusOr<std::vector<Scenario>> ReadWorkloadFile(const std::string& path,
                                                       const Scenario& base) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the workload file ", path));
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  auto resolve = [&](const std::string& p) {
    return std::filesystem::path(p).is_absolute() ? p : (dir / p).string();
  };
  std::vector<Scenario> mix;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    const std::string where = absl::StrCat(path, ":", number, ": ");
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object()) return absl::InvalidArgumentError(where + "not a JSON object");
    Scenario s = base;
    s.frames = 1;
    try {
      if (j.contains("type")) {
        auto kind = ParseKind(j.at("type").get<std::string>());
        if (!kind.ok()) return absl::InvalidArgumentError(where + std::string(kind.status().message()));
        s.kind = *kind;
      } else {
        s.kind = Kind::kImage;
      }
      s.name = j.value("name", std::string(KindName(s.kind)));
      s.weight = j.value("weight", s.weight);
      s.frames = j.value("frames", s.kind == Kind::kImage ? 1 : base.frames);
      s.turns = j.value("turns", s.turns);
      s.think_s = j.value("think_time_s", s.think_s);
      s.max_new_tokens = j.value("max_new_tokens", s.max_new_tokens);
      s.temperature = j.value("temperature", s.temperature);
      s.kv_policy = j.value("kv_policy", s.kv_policy);
      s.kv_budget = j.value("kv_budget", s.kv_budget);
      if (j.contains("images")) {
        for (const auto& p : j.at("images")) s.image_paths.push_back(resolve(p.get<std::string>()));
        s.frames = static_cast<int>(s.image_paths.size());
      }
      if (j.contains("video")) s.video_path = resolve(j.at("video").get<std::string>());
      if (j.contains("prompt")) s.prompts = {j.at("prompt").get<std::string>()};
      if (j.contains("prompts")) s.prompts = j.at("prompts").get<std::vector<std::string>>();
      if (j.contains("answer")) s.answers = {j.at("answer").get<std::string>()};
      if (j.contains("answers")) s.answers = j.at("answers").get<std::vector<std::string>>();
    } catch (const nlohmann::json::exception& e) {
      return absl::InvalidArgumentError(where + "a field has the wrong type: " + e.what());
    }
    const bool fixed_media = !s.image_paths.empty() || !s.video_path.empty();
    if (fixed_media != !s.prompts.empty()) {
      return absl::InvalidArgumentError(
          where + "give media and prompts together, or neither (then both are generated)");
    }
    if (s.kind == Kind::kSession) {
      if (!s.prompts.empty()) s.turns = static_cast<int>(s.prompts.size());
    } else if (s.prompts.size() > 1) {
      return absl::InvalidArgumentError(where + "a request has one prompt; \"prompts\" is for sessions");
    }
    if (s.kind == Kind::kImage && !s.video_path.empty()) {
      return absl::InvalidArgumentError(where + "an image request has \"images\", not \"video\"");
    }
    if (absl::Status st = CheckScenario(s); !st.ok()) {
      return absl::InvalidArgumentError(where + std::string(st.message()));
    }
    mix.push_back(std::move(s));
  }
  if (mix.empty()) return absl::InvalidArgumentError(absl::StrCat(path, " holds no scenario"));
  return mix;
}

absl::StatusOr<std::string> EncodeVideo(const std::vector<std::vector<uint8_t>>& rgb_frames,
                                        int width, int height) {
  const std::string dir = MakeTempDir("vlcache-loadtest-");
  std::string bytes;
  for (const auto& [name, fourcc] :
       {std::pair{"clip.mkv", cv::VideoWriter::fourcc('F', 'F', 'V', '1')},
        std::pair{"clip.avi", cv::VideoWriter::fourcc('M', 'J', 'P', 'G')}}) {
    const std::string path = dir + "/" + name;
    {
      cv::VideoWriter writer(path, fourcc, 10, cv::Size(width, height));
      if (!writer.isOpened()) continue;
      for (const auto& rgb : rgb_frames) {
        cv::Mat frame(height, width, CV_8UC3, const_cast<uint8_t*>(rgb.data())), bgr;
        cv::cvtColor(frame, bgr, cv::COLOR_RGB2BGR);
        writer.write(bgr);
      }
    }
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (!bytes.empty()) break;
  }
  RemoveTree(dir);
  if (bytes.empty()) return absl::InternalError("this OpenCV writes neither FFV1 nor MJPEG video");
  return bytes;
}

namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Questions about `clip` other than the item's own, each with its answer: what is at every
// occupied cell, the colour of each shape that is alone of its kind, the digit of each box alone
// in its colour, how many shapes each present colour has; in the frame the item asks about.
std::vector<Turn> MoreQuestions(const vqa::Item& item) {
  const int frames = static_cast<int>(item.clip.frames.size());
  const int f = item.question.frame;
  std::vector<vqa::Question> qs;
  for (const vqa::Object& o : item.clip.frames[f].objects) {
    vqa::Question at;
    at.kind = vqa::QuestionKind::kShapeAt;
    at.frame = f;
    at.row = o.row;
    at.col = o.col;
    qs.push_back(at);
    vqa::Question q;
    q.frame = f;
    q.color = o.color;
    if (o.is_box) {
      q.kind = vqa::QuestionKind::kDigitInBox;
    } else {
      vqa::Question c = q;
      c.kind = vqa::QuestionKind::kColorOfShape;
      c.shape = o.shape;
      c.color = vqa::Color::kRed;
      qs.push_back(c);
      q.kind = vqa::QuestionKind::kCount;
    }
    qs.push_back(q);
  }
  std::vector<Turn> turns;
  for (vqa::Question& q : qs) {
    q.text = vqa::QuestionText(q, frames);
    const std::string answer = vqa::Answer(item.clip, q);
    if (answer.empty() || q.text == item.question.text) continue;
    if (std::any_of(turns.begin(), turns.end(), [&](const Turn& t) { return t.prompt == q.text; }))
      continue;
    turns.push_back({q.text, answer});
  }
  return turns;
}

void SetCache(const Scenario& s, pb::CacheParams* cache) {
  if (!s.kv_policy.empty()) cache->set_policy(s.kv_policy);
  if (s.kv_budget > 0) cache->set_budget(s.kv_budget);
}

void SetSampling(const Scenario& s, uint64_t seed, pb::SamplingParams* sampling) {
  sampling->set_max_new_tokens(s.max_new_tokens);
  sampling->set_temperature(static_cast<float>(s.temperature));
  if (s.temperature > 0) sampling->set_seed(seed);
}

}  // namespace

absl::StatusOr<std::vector<std::vector<Task>>> MakeTasks(const std::vector<Scenario>& mix,
                                                         const MediaOptions& options) {
  vqa::Options vo;
  vo.image_size = options.image_size;
  std::vector<std::vector<Task>> all(mix.size());
  for (size_t si = 0; si < mix.size(); ++si) {
    const Scenario& s = mix[si];
    const bool fixed = !s.prompts.empty();
    const int distinct = fixed ? 1 : std::max(1, options.distinct);
    if (!fixed) {
      if (absl::Status st = vqa::ValidateSpec(s.frames, vo); !st.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("scenario \"", s.name, "\": ", st.message()));
      }
    }
    for (int i = 0; i < distinct; ++i) {
      Task t;
      t.scenario = static_cast<int>(si);
      pb::Media media;
      if (fixed) {
        for (const std::string& p : s.image_paths) {
          auto bytes = ReadFile(p);
          if (!bytes.ok()) return bytes.status();
          media.add_images(*std::move(bytes));
        }
        if (!s.video_path.empty()) {
          auto bytes = ReadFile(s.video_path);
          if (!bytes.ok()) return bytes.status();
          media.set_video(*std::move(bytes));
          media.set_video_frames(s.frames);
        }
        for (size_t k = 0; k < s.prompts.size(); ++k) {
          t.turns.push_back({s.prompts[k], s.answers.empty() ? "" : s.answers[k]});
        }
      } else {
        // Test-split items, a different run of them per scenario and seed.
        const int64_t index = static_cast<int64_t>(options.seed) * 100003 + si * 1009 + i;
        const vqa::Item item = vqa::MakeItem(vqa::Split::kTest, index, s.frames, vo);
        if (s.kind == Kind::kVideo) {
          std::vector<std::vector<uint8_t>> rgb;
          for (const auto& f : item.clip.frames) rgb.push_back(vqa::RenderFrame(f, vo));
          auto video = EncodeVideo(rgb, vo.image_size, vo.image_size);
          if (!video.ok()) return video.status();
          media.set_video(*std::move(video));
          media.set_video_frames(s.frames);
        } else {
          for (const auto& f : item.clip.frames) media.add_images(vqa::EncodePng(f, vo));
        }
        t.turns.push_back({vqa::Prompt(item), item.answer});
        if (s.kind == Kind::kSession) {
          const std::vector<Turn> more = MoreQuestions(item);
          for (int k = 1; k < s.turns && !more.empty(); ++k) {
            t.turns.push_back(more[(k - 1 + i) % more.size()]);
          }
        }
      }
      if (s.kind == Kind::kSession) {
        *t.create.mutable_media() = std::move(media);
        SetCache(s, t.create.mutable_cache());
        SetSampling(s, options.seed + i, &t.sampling);
      } else {
        *t.request.mutable_media() = std::move(media);
        t.request.set_prompt(t.turns[0].prompt);
        SetCache(s, t.request.mutable_cache());
        SetSampling(s, options.seed + i, t.request.mutable_sampling());
      }
      all[si].push_back(std::move(t));
    }
  }
  return all;
}

MixSampler::MixSampler(const std::vector<Scenario>& mix) {
  std::vector<double> w;
  for (const Scenario& s : mix) w.push_back(s.weight);
  pick_ = std::discrete_distribution<int>(w.begin(), w.end());
}

int MixSampler::Next(std::mt19937_64& rng) { return pick_(rng); }

bool AnswerMatches(const std::string& got, const std::string& want) {
  return absl::StripAsciiWhitespace(got) == absl::StripAsciiWhitespace(want);
}

}  // namespace vlc::loadtest
