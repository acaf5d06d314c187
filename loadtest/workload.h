// What vlcache-loadtest sends: a weighted mix of scenarios, each a kind of work a user does
// (one picture and a question, a video and a question, a conversation in a session), with its
// own sampling and cache parameters. A scenario either names its media and questions (a JSONL
// workload file) or has them made by the project's VQA generator (tools/vqa), whose questions
// have known answers, so that a run also measures whether the answers stayed right under load.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "vlcache/v1/inference.pb.h"

namespace vlc::loadtest {

namespace pb = vlcache::v1;

enum class Kind {
  kImage,    // Generate: one or more pictures (in order) and a question
  kVideo,    // Generate: one encoded video of `frames` frames and a question
  kSession,  // CreateSession with media, `turns` SessionGenerate calls, DeleteSession
};
const char* KindName(Kind kind);

struct Scenario {
  std::string name;  // how the records and the summary call it; defaults to the kind's name
  Kind kind = Kind::kImage;
  double weight = 1;
  int frames = 1;        // pictures per image request; frames per video; a session's media
  int turns = 3;         // a session's turns (each one question)
  double think_s = 0;    // a session's pause between the end of a turn and the next
  int max_new_tokens = 32;
  double temperature = 0;
  std::string kv_policy;  // "": the server's default
  double kv_budget = 0;   // 0: the policy's default
  // Fixed content, from a workload file. Without it, media and questions are generated.
  std::vector<std::string> image_paths;
  std::string video_path;
  std::vector<std::string> prompts;  // one per turn (image and video: one)
  std::vector<std::string> answers;  // expected answers, as many as prompts; empty: unknown
};

// The command-line form of a mix: "image", or "image:3,video:1,session:1" (kind:weight), each
// entry a copy of `base` with its kind and weight. An image request has one picture, a video
// `video_frames` frames, a session's media `session_frames` pictures.
absl::StatusOr<std::vector<Scenario>> ParseMix(const std::string& spec, const Scenario& base,
                                               int video_frames, int session_frames);

// A JSONL workload file: one scenario per line, fields named as in Scenario ("type", "weight",
// "frames", "turns", "think_time_s", "max_new_tokens", "temperature", "kv_policy", "kv_budget",
// "name", "images", "video", "prompt" or "prompts", "answer" or "answers"); absent fields take
// `base`'s values. Media paths are relative to the file's folder. A line without "type" is an
// image request, so the items.jsonl that vlcache-vqa writes is a workload file as it stands (its
// questions, pictures and answers). INVALID_ARGUMENT names the line and the field.
absl::StatusOr<std::vector<Scenario>> ReadWorkloadFile(const std::string& path,
                                                       const Scenario& base);

// One question and, when known, its answer.
struct Turn {
  std::string prompt;
  std::string answer;  // "": unknown
};

// One unit of work, ready to send: a request, or a session's creation and turns.
struct Task {
  int scenario = 0;  // index in the mix
  pb::GenerateRequest request;  // kImage, kVideo
  pb::CreateSessionRequest create;  // kSession
  pb::SamplingParams sampling;      // kSession: of every turn
  std::vector<Turn> turns;          // kImage, kVideo: one
};

struct MediaOptions {
  int image_size = 96;   // side of the generated pictures (the model's input size)
  int distinct = 16;     // generated tasks per scenario; arrivals cycle through them
  uint64_t seed = 1;     // which VQA test items (and so which pictures and questions)
};

// The distinct tasks of every scenario, made once before a run (media encoded, files read), so
// that the client spends its time sending. tasks[s] holds scenario s's tasks.
absl::StatusOr<std::vector<std::vector<Task>>> MakeTasks(const std::vector<Scenario>& mix,
                                                         const MediaOptions& options);

// Draws scenario indices with probability proportional to their weights.
class MixSampler {
 public:
  explicit MixSampler(const std::vector<Scenario>& mix);
  int Next(std::mt19937_64& rng);

 private:
  std::discrete_distribution<int> pick_;
};

// The same answer once spaces around it are removed (what vlcache-eval counts as right).
bool AnswerMatches(const std::string& got, const std::string& want);

// Frames (RGB, rows top to bottom) as an encoded video the server decodes back to the same
// pixels: FFV1 in Matroska when this OpenCV writes it, else MJPEG in AVI.
absl::StatusOr<std::string> EncodeVideo(const std::vector<std::vector<uint8_t>>& rgb_frames,
                                        int width, int height);

}  // namespace vlc::loadtest
