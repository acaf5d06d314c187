// The engine's device and dtype (engine/device.h): the option names and the clear errors where
// CUDA cannot run; the bfloat16 path on the CPU against float32, which exercises the
// device-agnostic conversion code (weights converted once, activations in the dtype, float32
// norms and softmax, float32 logits back); and, where a GPU is visible, the model on cuda in
// float32 and bfloat16 against the CPU's float32 run, with the paged cache on the GPU (the CUDA
// kernels) and the fused prefill attention. Only the GPU cases skip, and only without a GPU.
#include "engine/cpu_linear.h"
#include "engine/device.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "engine/generator.h"
#include "engine/model.h"
#include "kvcache/cuda_ops.h"
#include "kvcache/page_pool.h"
#include "kvcache/paged_cache.h"
#include "kvcache/policy.h"
#include "tests/engine/test_models.h"

namespace vlc::engine {
namespace {

::testing::AssertionResult Mentions(absl::string_view text, absl::string_view part) {
  if (text.find(part) != absl::string_view::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << part << "\" not in: " << text;
}

// ---- Option names and errors (everywhere) ---------------------------------------------------

TEST(ComputeTarget, CpuFloat32IsTheDefaultAndAutoDtypeFollowsTheDevice) {
  const ComputeTarget d;
  EXPECT_TRUE(d.device.is_cpu());
  EXPECT_EQ(d.dtype, at::kFloat);
  auto cpu = ResolveComputeTarget("cpu", "auto");
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_TRUE(cpu->device.is_cpu());
  EXPECT_EQ(cpu->dtype, at::kFloat);
  auto bf16 = ResolveComputeTarget("cpu", "bfloat16");
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  EXPECT_EQ(bf16->dtype, at::kBFloat16);
  EXPECT_EQ(ComputeTargetName(*bf16), "cpu bfloat16");
  auto f32 = ResolveComputeTarget("cpu", "float32");
  ASSERT_TRUE(f32.ok()) << f32.status();
  EXPECT_EQ(f32->dtype, at::kFloat);
}

TEST(ComputeTarget, UnknownNamesAreInvalidArguments) {
  auto device = ResolveComputeTarget("gpu", "auto");
  ASSERT_EQ(device.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(device.status().message(), "--device must be one of cpu, cuda, auto"));
  auto dtype = ResolveComputeTarget("cpu", "fp8");
  ASSERT_EQ(dtype.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(dtype.status().message(), "auto, float32, bfloat16, float16"));
}

// LibTorch's CPU has no half-precision arithmetic: float16 there means float16 weights under
// float32 activations, and it cannot be combined with int8 weights.
TEST(ComputeTarget, Float16OnTheCpuIsFloat16WeightsUnderFloat32) {
  auto half = ResolveComputeTarget("cpu", "float16");
  ASSERT_TRUE(half.ok()) << half.status();
  EXPECT_EQ(half->dtype, at::kFloat);
  EXPECT_EQ(half->quantize, WeightQuantization::kFloat16);
  EXPECT_EQ(ComputeTargetName(*half), "cpu float32 float16-weights");
  auto both = ResolveComputeTarget("cpu", "float16", "int8");
  ASSERT_EQ(both.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(both.status().message(), "two weight formats"));
}

TEST(ComputeTarget, Int8WeightsAreAnOptionOfTheCpu) {
  auto none = ResolveComputeTarget("cpu", "auto");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->quantize, WeightQuantization::kNone);
  auto int8 = ResolveComputeTarget("cpu", "bfloat16", "int8");
  ASSERT_TRUE(int8.ok()) << int8.status();
  EXPECT_EQ(int8->quantize, WeightQuantization::kInt8);
  EXPECT_EQ(int8->dtype, at::kBFloat16);
  EXPECT_EQ(ComputeTargetName(*int8), "cpu bfloat16 int8-weights");
  auto int4 = ResolveComputeTarget("cpu", "auto", "int4");
  ASSERT_EQ(int4.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(int4.status().message(), "--quantize must be one of none, int8"));
}

TEST(ComputeTarget, CudaSaysWhyItCannotRunAndAutoFallsBackToTheCpu) {
  auto cuda = ResolveComputeTarget("cuda", "auto");
  auto automatic = ResolveComputeTarget("auto", "auto");
  ASSERT_TRUE(automatic.ok()) << automatic.status();
  if (at::hasCUDA() && kvcache::CudaKernelsBuilt()) {
    ASSERT_TRUE(cuda.ok()) << cuda.status();
    EXPECT_TRUE(cuda->device.is_cuda());
    EXPECT_EQ(cuda->dtype, at::kBFloat16);  // auto dtype on a GPU
    EXPECT_TRUE(automatic->device.is_cuda());
    return;
  }
  ASSERT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition) << cuda.status();
  const char* why = !at::globalContext().hasCUDART() ? "this build's LibTorch has no CUDA"
                    : !at::hasCUDA()                  ? "no GPU visible"
                                                      : "built without the CUDA kernels";
  EXPECT_TRUE(Mentions(cuda.status().message(), "--device cuda: "));
  EXPECT_TRUE(Mentions(cuda.status().message(), why));
  EXPECT_TRUE(automatic->device.is_cpu());
  EXPECT_EQ(automatic->dtype, at::kFloat);
}

// ---- Traces of a model: prefill, then decode steps -------------------------------------------

LlavaConfig ThreeLayers(const std::string& type = "llama", int window = 0) {
  return SmallConfig(type, window, 3);
}

std::vector<int> PromptIds(const LlavaConfig& c) {
  std::vector<int> ids = {1, 9, 4, 22};
  for (int i = 0; i < c.visual_tokens_per_image(); ++i) ids.push_back(c.image_token_index);
  for (int i = 0; i < 7; ++i) ids.push_back(3 + (i * 13) % 80);
  return ids;
}

at::Tensor Pixels() {
  at::manual_seed(3);
  return at::randn({1, 3, 32, 32});
}

struct Trace {
  std::vector<at::Tensor> logits;  // prefill's last row, then one per decode step: [vocab] f32
  std::vector<int> fed;            // the token fed at each decode step
};

// Prefill on a paged cache of the model's target, then `steps` decode steps fed with `feed`
// (teacher forcing, so two models see the same tokens) or, when empty, with its own argmax.
Trace TraceOf(const LlavaModel& m, int steps, const std::vector<int>& feed = {}) {
  Trace tr;
  const auto& c = m.config();
  auto visual = m.EncodeImages(Pixels());
  EXPECT_TRUE(visual.ok()) << visual.status();
  if (!visual.ok()) return tr;
  const auto ids = PromptIds(c);
  auto embeds = m.EmbedPrompt(ids, *visual);
  EXPECT_TRUE(embeds.ok()) << embeds.status();
  auto pool = Pool(c, int64_t{16} << 20, m.target());
  kvcache::PagedKvCache cache(c.text.num_hidden_layers, pool.get());
  EXPECT_TRUE(cache.AddSequence(1).ok());
  auto logits = m.Prefill(1, *embeds, 0, &cache);
  EXPECT_TRUE(logits.ok()) << logits.status();
  if (!logits.ok()) return tr;
  for (int s = 0; s <= steps; ++s) {
    EXPECT_EQ(logits->scalar_type(), at::kFloat);  // whatever the model computes in
    EXPECT_TRUE(logits->device().is_cpu());
    tr.logits.push_back(logits->reshape({-1}));
    if (s == steps) break;
    const int next = feed.empty() ? static_cast<int>(logits->argmax(-1).item<int64_t>()) : feed[s];
    tr.fed.push_back(next);
    logits = m.DecodeStep({1}, {next}, {static_cast<int64_t>(ids.size()) + s}, &cache);
    EXPECT_TRUE(logits.ok()) << logits.status();
    if (!logits.ok()) return tr;
  }
  return tr;
}

// Largest |a - b| over all steps, relative to the reference's largest |logit|.
double RelativeError(const Trace& ref, const Trace& got) {
  double worst = 0, scale = 0;
  for (size_t i = 0; i < ref.logits.size() && i < got.logits.size(); ++i) {
    worst = std::max(worst, (ref.logits[i] - got.logits[i]).abs().max().item<double>());
    scale = std::max(scale, ref.logits[i].abs().max().item<double>());
  }
  return worst / std::max(scale, 1e-12);
}

// Steps (prefill included) whose argmax agrees.
int AgreeingArgmax(const Trace& ref, const Trace& got) {
  int n = 0;
  for (size_t i = 0; i < ref.logits.size() && i < got.logits.size(); ++i) {
    n += ref.logits[i].argmax().item<int64_t>() == got.logits[i].argmax().item<int64_t>();
  }
  return n;
}

struct Generated {
  std::vector<int> tokens;
  std::vector<int64_t> layer_budgets;
  std::vector<int64_t> lengths;  // per layer, at the end
  int64_t kv_bytes = 0;
};

// 1 + `decode_steps` greedy tokens through the Generator on a paged cache of the model's target.
Generated Generate(const LlavaModel& m, const std::string& policy, double budget,
                   int decode_steps) {
  Generated g;
  const auto& c = m.config();
  auto pool = Pool(c, int64_t{16} << 20, m.target());
  kvcache::PagedKvCache cache(c.text.num_hidden_layers, pool.get());
  Generator gen(&m, &cache, -1);
  SequenceSpec spec;
  spec.prompt_ids = PromptIds(c);
  auto visual = m.EncodeImages(Pixels());
  EXPECT_TRUE(visual.ok()) << visual.status();
  spec.visual = *visual;
  spec.sampling.max_new_tokens = decode_steps + 1;
  spec.cache_policy.name = policy;
  spec.cache_policy.budget = budget;
  spec.keep_cache = true;  // so that its per-layer lengths can be read at the end
  auto id = gen.Add(std::move(spec));
  EXPECT_TRUE(id.ok()) << id.status();
  if (!id.ok()) return g;
  while (gen.HasRunning()) {
    absl::Status st = gen.Step();
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) return g;
  }
  auto done = gen.TakeFinished();
  EXPECT_EQ(done.size(), 1u);
  if (done.empty()) return g;
  const SequenceResult& r = done[0].second;
  EXPECT_TRUE(r.error.ok()) << r.error;
  g.tokens = r.tokens;
  g.layer_budgets = r.layer_budgets;
  g.kv_bytes = r.kv_bytes;
  for (int l = 0; l < c.text.num_hidden_layers; ++l) g.lengths.push_back(cache.Length(*id, l));
  gen.Close(*id);
  return g;
}

int64_t Sum(const std::vector<int64_t>& v) {
  return std::accumulate(v.begin(), v.end(), int64_t{0});
}

// ---- bfloat16 on the CPU (everywhere) --------------------------------------------------------

const ComputeTarget kCpuBf16{at::kCPU, at::kBFloat16};
// Largest logit error of a bfloat16 model, relative to the float32 model's largest |logit|.
constexpr double kBf16Tolerance = 0.08;

TEST(Bfloat16OnCpu, WeightsAreConvertedOnceAndOutputsComeBackAsFloat32) {
  auto f32 = RandomModel(ThreeLayers());
  auto bf16 = RandomModel(ThreeLayers(), 7, 0.2f, kCpuBf16);
  ASSERT_TRUE(f32 && bf16);
  EXPECT_EQ(bf16->target().dtype, at::kBFloat16);
  EXPECT_EQ(2 * bf16->DecodeWeightBytes(), f32->DecodeWeightBytes());
  auto v32 = f32->EncodeImages(Pixels());
  auto v16 = bf16->EncodeImages(Pixels());
  ASSERT_TRUE(v32.ok() && v16.ok()) << v16.status();
  EXPECT_EQ(v16->scalar_type(), at::kBFloat16);  // activations stay in the model's dtype
  const double scale = v32->abs().max().item<double>();
  EXPECT_LT((v16->to(at::kFloat) - *v32).abs().max().item<double>(), 0.05 * scale);
}

TEST(Bfloat16OnCpu, PrefillAndDecodeTrackFloat32WithinBfloat16Rounding) {
  for (const auto& c : {ThreeLayers(), ThreeLayers("mistral", 9)}) {
    auto f32 = RandomModel(c);
    auto bf16 = RandomModel(c, 7, 0.2f, kCpuBf16);
    ASSERT_TRUE(f32 && bf16);
    const Trace ref = TraceOf(*f32, 10);
    const Trace got = TraceOf(*bf16, 10, ref.fed);  // the same tokens fed
    ASSERT_EQ(got.logits.size(), ref.logits.size());
    // bfloat16 keeps 8 bits of mantissa (relative rounding 2^-9); the random weights (std 0.2)
    // amplify it through the vision tower and 3 layers to about 5% of the largest logit, against
    // errors of the order of the logits themselves for a wrong position, head or cache entry.
    EXPECT_LT(RelativeError(ref, got), kBf16Tolerance) << c.text.model_type;
    EXPECT_GE(AgreeingArgmax(ref, got), 9) << "of 11 greedy choices, " << c.text.model_type;
  }
}

TEST(Bfloat16OnCpu, FullForwardOnItsOwnDtypeCacheMatchesThePagedPath) {
  // ForwardFull runs on a bfloat16 ContiguousKvCache (CausalAttention in bfloat16, float32
  // softmax); the paged path keeps float32 K/V on the CPU. Both must track the float32 model.
  auto f32 = RandomModel(ThreeLayers());
  auto bf16 = RandomModel(ThreeLayers(), 7, 0.2f, kCpuBf16);
  auto e32 = f32->EmbedPrompt(PromptIds(f32->config()), *f32->EncodeImages(Pixels()));
  auto e16 = bf16->EmbedPrompt(PromptIds(bf16->config()), *bf16->EncodeImages(Pixels()));
  ASSERT_TRUE(e32.ok() && e16.ok());
  EXPECT_EQ(e16->scalar_type(), at::kBFloat16);
  auto ref = f32->ForwardFull(*e32);
  auto got = bf16->ForwardFull(*e16);
  ASSERT_TRUE(ref.ok() && got.ok()) << got.status();
  const double scale = ref->abs().max().item<double>();
  EXPECT_LT((*got - *ref).abs().max().item<double>(), kBf16Tolerance * scale);
  EXPECT_LT((*got - *ref).abs().mean().item<double>(), 0.04 * ref->abs().mean().item<double>());
  EXPECT_TRUE(at::equal(got->argmax(-1), ref->argmax(-1)));
}

TEST(Bfloat16OnCpu, CompressedGenerationKeepsTheSameBudget) {
  auto f32 = RandomModel(ThreeLayers());
  auto bf16 = RandomModel(ThreeLayers(), 7, 0.2f, kCpuBf16);
  const Generated ref = Generate(*f32, "vlcache", 0.3, 10);
  const Generated got = Generate(*bf16, "vlcache", 0.3, 10);
  ASSERT_EQ(got.tokens.size(), 11u);
  ASSERT_EQ(got.layer_budgets.size(), ref.layer_budgets.size());
  // The budgets split differently only if bfloat16 moves a layer's sparsity; their total is the
  // policy's accounting and cannot move.
  EXPECT_EQ(Sum(got.layer_budgets), Sum(ref.layer_budgets));
  EXPECT_EQ(Sum(got.lengths), Sum(ref.lengths));
  EXPECT_EQ(got.tokens[0], ref.tokens[0]);
}

// ---- int8 weights on the CPU (everywhere) ---------------------------------------------------

TEST(Int8OnCpu, MatricesAreStoredInOneBytePerWeightAndTrackFloat32) {
  const ComputeTarget int8_f32{at::kCPU, at::kFloat, WeightQuantization::kInt8};
  const ComputeTarget int8_bf16{at::kCPU, at::kBFloat16, WeightQuantization::kInt8};
  for (const auto& c : {ThreeLayers(), ThreeLayers("mistral", 9)}) {
    auto f32 = RandomModel(c);
    ASSERT_TRUE(f32);
    const Trace ref = TraceOf(*f32, 10);
    for (const ComputeTarget& target : {int8_f32, int8_bf16}) {
      auto q = RandomModel(c, 7, 0.2f, target);
      ASSERT_TRUE(q);
      // The four decoder matrices and the LM head at one byte (plus a float scale per row);
      // the norms stay in the dtype.
      EXPECT_LT(q->DecodeWeightBytes(), f32->DecodeWeightBytes() / 3) << ComputeTargetName(target);
      const Trace got = TraceOf(*q, 10, ref.fed);
      ASSERT_EQ(got.logits.size(), ref.logits.size());
      // Each weight moves by at most half its row's scale, max |w| / 254: for a Gaussian row
      // (max about 3.5 sd) about 1.4% of a typical weight, uniformly, where bfloat16 rounds
      // each weight by at most 2^-9 of itself. So int8 alone sits near bfloat16's error, and
      // int8 with bfloat16 activations above it: 1.5x bfloat16's tolerance, still far below the
      // error of a wrong position, head or cache entry (the order of the logits themselves).
      //
      // On CPUs with AVX512-VNNI the decode kernel also quantizes the activations, per block of
      // 64 (cpu_linear.h), each element by at most max |x_block| / 254: a second error of the
      // weights' size. On these random weights (sd 0.2, so near-tied logits) it measured
      // 0.08-0.12 against 0.05-0.09 with the weights widened, and one more greedy choice of 11
      // may flip; the kernel's own bound is tested in cpu_linear_test.
      const bool x_quantized =
          CpuLinearPath(at::zeros({1, c.text.hidden_size}, target.dtype),
                        at::zeros({8, c.text.hidden_size}, at::kChar)) == LinearPath::kInt8Dot;
      EXPECT_LT(RelativeError(ref, got), 1.5 * kBf16Tolerance) << ComputeTargetName(target);
      std::printf("%s%s: relative logit error %.4f\n", ComputeTargetName(target).c_str(),
                  x_quantized ? " (activations quantized)" : "", RelativeError(ref, got));
      EXPECT_GE(AgreeingArgmax(ref, got), x_quantized ? 8 : 9)
          << "of 11 greedy choices, " << ComputeTargetName(target);
    }
  }
}

// ---- float16 weights on the CPU (everywhere) ------------------------------------------------

TEST(Float16OnCpu, MatricesAreStoredInTwoBytesAndTrackFloat32) {
  const ComputeTarget half{at::kCPU, at::kFloat, WeightQuantization::kFloat16};
  for (const auto& c : {ThreeLayers(), ThreeLayers("mistral", 9)}) {
    auto f32 = RandomModel(c);
    ASSERT_TRUE(f32);
    const Trace ref = TraceOf(*f32, 10);
    auto h = RandomModel(c, 7, 0.2f, half);
    ASSERT_TRUE(h);
    // The decoder's matrices and the LM head at two bytes, the norms at four.
    EXPECT_LT(h->DecodeWeightBytes(), f32->DecodeWeightBytes() * 0.55);
    EXPECT_GT(h->DecodeWeightBytes(), f32->DecodeWeightBytes() * 0.45);
    const Trace got = TraceOf(*h, 10, ref.fed);
    ASSERT_EQ(got.logits.size(), ref.logits.size());
    // Float16 rounds each weight by at most 2^-11 of itself, a quarter of bfloat16's rounding,
    // and the activations stay float32: well inside bfloat16's tolerance, every greedy choice
    // the same.
    const double err = RelativeError(ref, got);
    std::printf("%s: relative logit error %.5f\n", ComputeTargetName(half).c_str(), err);
    EXPECT_LT(err, kBf16Tolerance / 4);
    EXPECT_EQ(AgreeingArgmax(ref, got), 11);
  }
}

TEST(Float16OnCpu, CompressedGenerationEqualsFloat32) {
  auto f32 = RandomModel(ThreeLayers());
  auto h = RandomModel(ThreeLayers(), 7, 0.2f,
                       ComputeTarget{at::kCPU, at::kFloat, WeightQuantization::kFloat16});
  const Generated ref = Generate(*f32, "vlcache", 0.3, 10);
  const Generated got = Generate(*h, "vlcache", 0.3, 10);
  EXPECT_EQ(got.tokens, ref.tokens);
  EXPECT_EQ(got.layer_budgets, ref.layer_budgets);
  EXPECT_EQ(Sum(got.lengths), Sum(ref.lengths));
}

TEST(Int8OnCpu, CompressedGenerationKeepsTheSameBudget) {
  auto f32 = RandomModel(ThreeLayers());
  auto q = RandomModel(ThreeLayers(), 7, 0.2f,
                       ComputeTarget{at::kCPU, at::kFloat, WeightQuantization::kInt8});
  const Generated ref = Generate(*f32, "vlcache", 0.3, 10);
  const Generated got = Generate(*q, "vlcache", 0.3, 10);
  ASSERT_EQ(got.tokens.size(), 11u);
  EXPECT_EQ(Sum(got.layer_budgets), Sum(ref.layer_budgets));
  EXPECT_EQ(Sum(got.lengths), Sum(ref.lengths));
  EXPECT_EQ(got.tokens[0], ref.tokens[0]);
}

// ---- The GPU (skipped where none is visible) -------------------------------------------------

#define VLC_REQUIRE_GPU()                                               \
  do {                                                                  \
    if (!at::hasCUDA()) GTEST_SKIP() << "no GPU visible to LibTorch";   \
  } while (0)

ComputeTarget Gpu(at::ScalarType dtype) { return {at::Device(at::kCUDA, 0), dtype}; }

// Float32 on the GPU compares tightly only without TF32 (cuDNN allows it for convolutions by
// default; the vision tower's patch embedding is one).
class GpuPrecision {
 public:
  GpuPrecision() : saved_(at::globalContext().allowTF32CuDNN()) {
    at::globalContext().setAllowTF32CuDNN(false);
  }
  ~GpuPrecision() { at::globalContext().setAllowTF32CuDNN(saved_); }

 private:
  bool saved_;
};

TEST(Gpu, Float32ModelMatchesTheCpuStepForStep) {
  VLC_REQUIRE_GPU();
  GpuPrecision precision;
  for (const auto& c : {ThreeLayers(), ThreeLayers("mistral", 9)}) {
    auto cpu = RandomModel(c);
    auto gpu = RandomModel(c, 7, 0.2f, Gpu(at::kFloat));
    ASSERT_TRUE(cpu && gpu);
    const Trace ref = TraceOf(*cpu, 10);
    const Trace got = TraceOf(*gpu, 10, ref.fed);
    ASSERT_EQ(got.logits.size(), ref.logits.size());
    EXPECT_LT(RelativeError(ref, got), 1e-4) << c.text.model_type;
    EXPECT_EQ(AgreeingArgmax(ref, got), 11) << c.text.model_type;
    // The whole-sequence reference: the GPU's contiguous cache and fused attention.
    auto e_cpu = cpu->EmbedPrompt(PromptIds(c), *cpu->EncodeImages(Pixels()));
    auto e_gpu = gpu->EmbedPrompt(PromptIds(c), *gpu->EncodeImages(Pixels()));
    ASSERT_TRUE(e_cpu.ok() && e_gpu.ok()) << e_gpu.status();
    EXPECT_TRUE(e_gpu->is_cuda());
    auto full_cpu = cpu->ForwardFull(*e_cpu);
    auto full_gpu = gpu->ForwardFull(*e_gpu);
    ASSERT_TRUE(full_cpu.ok() && full_gpu.ok()) << full_gpu.status();
    EXPECT_LT((*full_gpu - *full_cpu).abs().max().item<double>(),
              1e-4 * full_cpu->abs().max().item<double>());
  }
}

TEST(Gpu, Bfloat16ModelTracksTheCpuWithinBfloat16Rounding) {
  VLC_REQUIRE_GPU();
  auto cpu = RandomModel(ThreeLayers());
  auto gpu = RandomModel(ThreeLayers(), 7, 0.2f, Gpu(at::kBFloat16));
  ASSERT_TRUE(cpu && gpu);
  const Trace ref = TraceOf(*cpu, 10);
  const Trace got = TraceOf(*gpu, 10, ref.fed);
  ASSERT_EQ(got.logits.size(), ref.logits.size());
  EXPECT_LT(RelativeError(ref, got), kBf16Tolerance);
  EXPECT_GE(AgreeingArgmax(ref, got), 9) << "of 11 greedy choices";
}

TEST(Gpu, PrefillObservationMatchesTheCpuReference) {
  // The fused prefill's observation comes from the observation kernel; the CPU's from the
  // chunked scores (kvcache/attention.h). Same rows, same sums, same sparse counts.
  VLC_REQUIRE_GPU();
  GpuPrecision precision;
  auto cpu = RandomModel(ThreeLayers());
  auto gpu = RandomModel(ThreeLayers(), 7, 0.2f, Gpu(at::kFloat));
  const auto& c = cpu->config();
  kvcache::ObservationSpec spec;
  spec.enabled = true;
  spec.query_begin = 4 + c.visual_tokens_per_image();  // the post-vision rows
  spec.sparsity = true;
  spec.threshold = 0.01;
  std::vector<std::vector<kvcache::LayerObservation>> obs(2);
  int i = 0;
  for (const LlavaModel* m : {cpu.get(), gpu.get()}) {
    auto embeds = m->EmbedPrompt(PromptIds(c), *m->EncodeImages(Pixels()));
    ASSERT_TRUE(embeds.ok());
    auto pool = Pool(c, int64_t{16} << 20, m->target());
    kvcache::PagedKvCache cache(c.text.num_hidden_layers, pool.get());
    ASSERT_TRUE(cache.AddSequence(1).ok());
    auto logits = m->Prefill(1, *embeds, 0, &cache, false, &spec, &obs[i++]);
    ASSERT_TRUE(logits.ok()) << logits.status();
  }
  ASSERT_EQ(obs[1].size(), obs[0].size());
  for (size_t l = 0; l < obs[0].size(); ++l) {
    const auto& a = obs[0][l];
    const auto& b = obs[1][l];
    EXPECT_TRUE(b.col_sums.is_cuda());  // the policy selects on the device
    EXPECT_TRUE(at::allclose(b.col_sums.cpu(), a.col_sums, 1e-4, 1e-5)) << "layer " << l;
    EXPECT_EQ(b.causal_entries, a.causal_entries) << "layer " << l;
    // An entry right at the threshold may fall either way after float rounding.
    EXPECT_LE((b.sparse_counts.cpu() - a.sparse_counts).abs().max().item<int64_t>(), 2)
        << "layer " << l;
  }
}

void ExpectGenerationMatchesCpu(at::ScalarType dtype, const std::string& policy, double budget) {
  GpuPrecision precision;
  auto cpu = RandomModel(ThreeLayers());
  auto gpu = RandomModel(ThreeLayers(), 7, 0.2f, Gpu(dtype));
  const Generated ref = Generate(*cpu, policy, budget, 10);
  const Generated got = Generate(*gpu, policy, budget, 10);
  ASSERT_EQ(got.tokens.size(), 11u) << policy;
  ASSERT_EQ(got.lengths.size(), ref.lengths.size());
  const int64_t element = c10::elementSize(dtype);
  if (dtype == at::kFloat) {
    EXPECT_EQ(got.tokens, ref.tokens) << policy;
    EXPECT_EQ(got.layer_budgets, ref.layer_budgets) << policy;
    EXPECT_EQ(got.lengths, ref.lengths) << policy;
    EXPECT_EQ(got.kv_bytes, ref.kv_bytes) << policy;
    return;
  }
  // bfloat16: the same accounting; token choices may part where float32's top two are close.
  EXPECT_EQ(Sum(got.layer_budgets), Sum(ref.layer_budgets)) << policy;
  EXPECT_EQ(Sum(got.lengths), Sum(ref.lengths)) << policy;
  EXPECT_EQ(got.tokens[0], ref.tokens[0]) << policy;
  if (policy == "full") {
    EXPECT_EQ(got.lengths, ref.lengths);
    EXPECT_EQ(got.kv_bytes * 4, ref.kv_bytes * element);  // same pages, half-size elements
  }
}

TEST(Gpu, Float32GenerationEqualsTheCpuFullCache) {
  VLC_REQUIRE_GPU();
  ExpectGenerationMatchesCpu(at::kFloat, "full", 1.0);
}

TEST(Gpu, Float32GenerationEqualsTheCpuVlCacheAt30Percent) {
  VLC_REQUIRE_GPU();
  ExpectGenerationMatchesCpu(at::kFloat, "vlcache", 0.3);
}

TEST(Gpu, Bfloat16GenerationTracksTheCpuFullCache) {
  VLC_REQUIRE_GPU();
  ExpectGenerationMatchesCpu(at::kBFloat16, "full", 1.0);
}

TEST(Gpu, Bfloat16GenerationTracksTheCpuVlCacheAt30Percent) {
  VLC_REQUIRE_GPU();
  ExpectGenerationMatchesCpu(at::kBFloat16, "vlcache", 0.3);
}

}  // namespace
}  // namespace vlc::engine
