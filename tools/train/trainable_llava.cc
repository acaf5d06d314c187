#include "tools/train/trainable_llava.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/optim/adamw.h>
#include <torch/serialize/archive.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "engine/layers.h"
#include "engine/safetensors.h"
#include "engine/weights.h"
#include "kvcache/attention.h"
#include "tools/random_weights.h"

namespace vlc::train {
namespace {

using engine::LlavaConfig;

// Norms, activations and RoPE are the engine's own (engine/layers.h), so that an exported
// checkpoint reproduces this model's logits to float rounding (the tests hold it to 1e-4).
using engine::Activation;
using engine::ApplyRope;
using engine::RmsNorm;

// Causal attention runs over blocks of query rows, each against only the keys some row of the
// block can see: the masked half of the score matrix is never computed, and short rows keep
// softmax in cache. Measured here (one thread, B = 4, T = 540, GQA 6/2, forward + backward),
// blocks of 64 rows took 30 ms per layer against 70 ms for one masked [T, T] product, 105 ms for
// matmul + masked_fill, and about as much for LibTorch 1.13's math-only
// scaled_dot_product_attention over repeated K/V.
constexpr int64_t kAttentionBlockRows = 64;

struct AttentionBlock {
  int64_t begin, end, key_begin;  // query rows [begin, end) see keys [key_begin, end)
  at::Tensor mask;                // additive [group * rows, keys]: one copy per query head
};

std::vector<AttentionBlock> AttentionBlocks(int64_t seq_len, int64_t group, int window) {
  std::vector<AttentionBlock> blocks;
  for (int64_t i0 = 0; i0 < seq_len; i0 += kAttentionBlockRows) {
    AttentionBlock blk;
    blk.begin = i0;
    blk.end = std::min(seq_len, i0 + kAttentionBlockRows);
    blk.key_begin = window > 0 ? std::max<int64_t>(0, i0 - window + 1) : 0;
    // Query i sees keys j <= i (and j > i - window under a sliding window), as the engine's
    // CausalAttention. With right padding that alone keeps padding out of every real position:
    // all keys a real query sees are real.
    auto qi = at::arange(blk.begin, blk.end, at::kLong).unsqueeze(1);
    auto kj = at::arange(blk.key_begin, blk.end, at::kLong).unsqueeze(0);
    auto hidden = kj > qi;
    if (window > 0) hidden = hidden.logical_or(kj <= qi - window);
    blk.mask = at::zeros(hidden.sizes(), at::kFloat)
                   .masked_fill(hidden, -std::numeric_limits<float>::infinity())
                   .repeat({group, 1});
    blocks.push_back(std::move(blk));
  }
  return blocks;
}

// q [B, h, T, hd], k and v [B, hkv, T, hd] -> [B, T, h * hd]. GQA without repeating K/V: query
// head kv * group + g shares KV head kv (HF's repeat_kv), so a block's queries of one group stack
// into one [group * rows, hd] matrix per KV head; baddbmm adds the mask and applies the scale as
// the GEMM writes the scores.
//
// A compressed batch also gives `answer_rows` [B, T] (bool: the rows that decode through the
// compressed cache) and this layer's `evicted` [B, hkv, T] (bool: the prompt keys its plan
// dropped, per KV head); a block with answer rows then adds -inf where such a row meets such a
// key, per sequence and KV head.
at::Tensor BlockedCausalAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const std::vector<AttentionBlock>& blocks, double scale,
                                  const at::Tensor& answer_rows = {},
                                  const at::Tensor& evicted = {}) {
  const int64_t batch = q.size(0), h = q.size(1), t = q.size(2), hd = q.size(3);
  const int64_t hkv = k.size(1), group = h / hkv, bkv = batch * hkv;
  auto q4 = q.reshape({bkv, group, t, hd});
  auto k3 = k.reshape({bkv, t, hd});
  auto v3 = v.reshape({bkv, t, hd});
  std::vector<at::Tensor> outs;
  for (const AttentionBlock& blk : blocks) {
    const int64_t rows = blk.end - blk.begin;
    auto qb = q4.slice(2, blk.begin, blk.end).reshape({bkv, group * rows, hd});
    auto kb = k3.slice(1, blk.key_begin, blk.end);
    at::Tensor mask = blk.mask;
    if (answer_rows.defined()) {
      auto rows_b = answer_rows.slice(1, blk.begin, blk.end);  // [B, rows]
      if (rows_b.any().item<bool>()) {
        auto keys_b = evicted.slice(2, blk.key_begin, blk.end);  // [B, hkv, keys]
        auto hide = rows_b.view({batch, 1, 1, rows, 1})
                        .logical_and(keys_b.unsqueeze(2).unsqueeze(2))  // [B, hkv, 1, rows, keys]
                        .expand({batch, hkv, group, rows, keys_b.size(2)})
                        .reshape({bkv, group * rows, keys_b.size(2)});
        mask = blk.mask.unsqueeze(0).masked_fill(hide, -std::numeric_limits<float>::infinity());
      }
    }
    auto s = at::baddbmm(mask, qb, kb.transpose(1, 2), /*beta=*/1.0, /*alpha=*/scale);
    auto ob = at::bmm(at::softmax(s, -1), v3.slice(1, blk.key_begin, blk.end));
    outs.push_back(ob.view({bkv, group, rows, hd}));
  }
  auto a = outs.size() == 1 ? outs[0] : at::cat(outs, 2);  // [bkv, group, T, hd]
  return a.view({batch, h, t, hd}).transpose(1, 2).reshape({batch, t, h * hd});
}

std::string ShapeString(at::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Writes `contents` to `path` through a temporary file renamed into place, so an interrupted
// export never leaves a truncated config or tokenizer behind.
absl::Status WriteFileAtomic(const std::string& path, const std::string& contents) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << contents;
    out.close();
    if (!out) {
      std::remove(tmp.c_str());
      return absl::InternalError(absl::StrCat("cannot write ", tmp));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path, ": ", why));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return absl::InternalError(absl::StrCat("cannot read ", path));
  return data;
}

// How Init draws a tensor.
enum class InitKind { kNormal, kResidualOut, kOnes, kZeros };

}  // namespace

struct TrainableLlava::Params {
  struct VisionLayer {
    at::Tensor ln1_w, ln1_b, q_w, q_b, k_w, k_b, v_w, v_b, out_w, out_b, ln2_w, ln2_b, fc1_w, fc1_b,
        fc2_w, fc2_b;
  };
  struct TextLayer {
    at::Tensor in_norm, q_w, k_w, v_w, o_w, post_norm, gate_w, up_w, down_w;
  };
  at::Tensor patch_w, class_emb, pos_emb, pre_ln_w, pre_ln_b;
  std::vector<VisionLayer> vision_layers;  // only the first vision_layers_used run
  int vision_layers_used = 0;
  at::Tensor post_ln_w, post_ln_b;  // exported for transformers; LLaVA never applies it
  at::Tensor proj1_w, proj1_b, proj2_w, proj2_b;
  at::Tensor embed, norm, lm_head;  // lm_head aliases embed when the embeddings are tied
  std::vector<TextLayer> text_layers;
  at::Tensor inv_freq;  // [head_dim / 2], not trained

  // Parallel to TrainableLlava::tensors_.
  std::vector<InitKind> init_kind;
  std::vector<double> residual_scale;  // for kResidualOut: 1 / sqrt(2 * layers of the tower)
};

TrainableLlava::TrainableLlava(const LlavaConfig& config) : config_(config), p_(new Params) {}
TrainableLlava::~TrainableLlava() = default;

std::pair<at::Tensor, std::vector<int64_t>> PadSequences(
    const std::vector<std::vector<int>>& sequences, int pad_id) {
  size_t longest = 0;
  for (const auto& s : sequences) longest = std::max(longest, s.size());
  auto ids = at::full({static_cast<int64_t>(sequences.size()), static_cast<int64_t>(longest)},
                      pad_id, at::kLong);
  auto acc = ids.accessor<int64_t, 2>();
  std::vector<int64_t> lengths;
  for (size_t b = 0; b < sequences.size(); ++b) {
    for (size_t t = 0; t < sequences[b].size(); ++t) acc[b][t] = sequences[b][t];
    lengths.push_back(static_cast<int64_t>(sequences[b].size()));
  }
  return {ids, lengths};
}

absl::StatusOr<std::unique_ptr<TrainableLlava>> TrainableLlava::Create(const LlavaConfig& config) {
  // The parser validates (heads dividing sizes, GQA groups, feature layer range, ...) and fixes
  // the config to what config.json can express.
  absl::StatusOr<LlavaConfig> parsed = LlavaConfig::FromJson(config.ToJson());
  if (!parsed.ok()) {
    return absl::Status(parsed.status().code(),
                        absl::StrCat("invalid config: ", parsed.status().message()));
  }
  std::unique_ptr<TrainableLlava> m(new TrainableLlava(*parsed));
  const LlavaConfig& c = m->config_;
  Params& p = *m->p_;
  VLC_RETURN_IF_ERROR(CatchAll("allocating parameters", [&] {
    auto add = [&](const std::string& name, std::vector<int64_t> shape, InitKind kind, bool used,
                   double residual_scale = 1.0) {
      at::Tensor t = at::empty(shape, at::kFloat);
      t.set_requires_grad(used);
      m->tensors_.emplace_back(name, t);
      p.init_kind.push_back(kind);
      p.residual_scale.push_back(residual_scale);
      return t;
    };
    using K = InitKind;
    const auto& v = c.vision;
    const int64_t hv = v.hidden_size, iv = v.intermediate_size;
    const int fl = c.vision_feature_layer;
    // Hidden state fl (0 = embeddings) is the output of layer fl - 1: layers past it are dead.
    p.vision_layers_used = fl < 0 ? v.num_hidden_layers + 1 + fl : fl;
    const double vision_residual = 1.0 / std::sqrt(2.0 * v.num_hidden_layers);
    p.class_emb = add("vision.embeddings.class_embedding", {hv}, K::kNormal, true);
    p.patch_w = add("vision.embeddings.patch_embedding.weight",
                    {hv, v.num_channels, v.patch_size, v.patch_size}, K::kNormal, true);
    p.pos_emb = add("vision.embeddings.position_embedding.weight", {v.num_patches() + 1, hv},
                    K::kNormal, true);
    p.pre_ln_w = add("vision.pre_layrnorm.weight", {hv}, K::kOnes, true);
    p.pre_ln_b = add("vision.pre_layrnorm.bias", {hv}, K::kZeros, true);
    for (int i = 0; i < v.num_hidden_layers; ++i) {
      const std::string pre = absl::StrCat("vision.encoder.layers.", i, ".");
      const bool used = i < p.vision_layers_used;
      Params::VisionLayer l;
      l.q_w = add(pre + "self_attn.q_proj.weight", {hv, hv}, K::kNormal, used);
      l.q_b = add(pre + "self_attn.q_proj.bias", {hv}, K::kZeros, used);
      l.k_w = add(pre + "self_attn.k_proj.weight", {hv, hv}, K::kNormal, used);
      l.k_b = add(pre + "self_attn.k_proj.bias", {hv}, K::kZeros, used);
      l.v_w = add(pre + "self_attn.v_proj.weight", {hv, hv}, K::kNormal, used);
      l.v_b = add(pre + "self_attn.v_proj.bias", {hv}, K::kZeros, used);
      l.out_w =
          add(pre + "self_attn.out_proj.weight", {hv, hv}, K::kResidualOut, used, vision_residual);
      l.out_b = add(pre + "self_attn.out_proj.bias", {hv}, K::kZeros, used);
      l.ln1_w = add(pre + "layer_norm1.weight", {hv}, K::kOnes, used);
      l.ln1_b = add(pre + "layer_norm1.bias", {hv}, K::kZeros, used);
      l.fc1_w = add(pre + "mlp.fc1.weight", {iv, hv}, K::kNormal, used);
      l.fc1_b = add(pre + "mlp.fc1.bias", {iv}, K::kZeros, used);
      l.fc2_w = add(pre + "mlp.fc2.weight", {hv, iv}, K::kResidualOut, used, vision_residual);
      l.fc2_b = add(pre + "mlp.fc2.bias", {hv}, K::kZeros, used);
      l.ln2_w = add(pre + "layer_norm2.weight", {hv}, K::kOnes, used);
      l.ln2_b = add(pre + "layer_norm2.bias", {hv}, K::kZeros, used);
      p.vision_layers.push_back(std::move(l));
    }
    p.post_ln_w = add("vision.post_layernorm.weight", {hv}, K::kOnes, false);
    p.post_ln_b = add("vision.post_layernorm.bias", {hv}, K::kZeros, false);

    const auto& t = c.text;
    const int64_t ht = t.hidden_size, hd = t.head_dim, it = t.intermediate_size;
    const int64_t nq = t.num_attention_heads * hd, nkv = t.num_key_value_heads * hd;
    const double text_residual = 1.0 / std::sqrt(2.0 * t.num_hidden_layers);
    p.proj1_w = add("projector.linear_1.weight", {ht, hv}, K::kNormal, true);
    if (c.multimodal_projector_bias) {
      p.proj1_b = add("projector.linear_1.bias", {ht}, K::kZeros, true);
    }
    p.proj2_w = add("projector.linear_2.weight", {ht, ht}, K::kNormal, true);
    if (c.multimodal_projector_bias) {
      p.proj2_b = add("projector.linear_2.bias", {ht}, K::kZeros, true);
    }
    p.embed = add("lm.embed_tokens.weight", {t.vocab_size, ht}, K::kNormal, true);
    for (int i = 0; i < t.num_hidden_layers; ++i) {
      const std::string pre = absl::StrCat("lm.layers.", i, ".");
      Params::TextLayer l;
      l.q_w = add(pre + "self_attn.q_proj.weight", {nq, ht}, K::kNormal, true);
      l.k_w = add(pre + "self_attn.k_proj.weight", {nkv, ht}, K::kNormal, true);
      l.v_w = add(pre + "self_attn.v_proj.weight", {nkv, ht}, K::kNormal, true);
      l.o_w = add(pre + "self_attn.o_proj.weight", {ht, nq}, K::kResidualOut, true, text_residual);
      l.gate_w = add(pre + "mlp.gate_proj.weight", {it, ht}, K::kNormal, true);
      l.up_w = add(pre + "mlp.up_proj.weight", {it, ht}, K::kNormal, true);
      l.down_w = add(pre + "mlp.down_proj.weight", {ht, it}, K::kResidualOut, true, text_residual);
      l.in_norm = add(pre + "input_layernorm.weight", {ht}, K::kOnes, true);
      l.post_norm = add(pre + "post_attention_layernorm.weight", {ht}, K::kOnes, true);
      p.text_layers.push_back(std::move(l));
    }
    p.norm = add("lm.norm.weight", {ht}, K::kOnes, true);
    p.lm_head = t.tie_word_embeddings ? p.embed
                                      : add("lm_head.weight", {t.vocab_size, ht}, K::kNormal, true);
    // As the engine computes it, so the rotation angles agree to the last bit.
    p.inv_freq = 1.0 / at::pow(t.rope_theta, at::arange(0, hd, 2, at::kLong).to(at::kFloat) /
                                                 static_cast<double>(hd));
  }));
  m->Init(0, 0.02f);
  return m;
}

void TrainableLlava::Init(uint64_t seed, float init_std) {
  at::NoGradGuard no_grad;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    at::Tensor& t = tensors_[i].second;
    switch (p_->init_kind[i]) {
      case InitKind::kNormal:
        t.normal_(0.0, init_std, gen);
        break;
      case InitKind::kResidualOut:
        t.normal_(0.0, init_std * p_->residual_scale[i], gen);
        break;
      case InitKind::kOnes:
        t.fill_(1.0);
        break;
      case InitKind::kZeros:
        t.zero_();
        break;
    }
  }
}

absl::StatusOr<std::unique_ptr<TrainableLlava>> TrainableLlava::FromCheckpoint(
    const std::string& dir) {
  VLC_ASSIGN_OR_RETURN(LlavaConfig config, LlavaConfig::FromFile(dir + "/config.json"));
  VLC_ASSIGN_OR_RETURN(std::unique_ptr<TrainableLlava> m, Create(config));
  VLC_ASSIGN_OR_RETURN(engine::WeightMap weights, engine::LoadCheckpointWeights(dir, at::kFloat));
  absl::Status status;
  VLC_RETURN_IF_ERROR(CatchAll("loading weights", [&] {
    at::NoGradGuard no_grad;
    for (auto& [name, t] : m->tensors_) {
      auto it = weights.find(name);
      if (it == weights.end()) {
        if (!t.requires_grad()) continue;  // the engine ignores it too
        status = absl::InvalidArgumentError(
            absl::StrCat(dir, ": checkpoint is missing tensor '", name, "' (canonical name)"));
        return;
      }
      if (it->second.sizes() != t.sizes()) {
        status = absl::InvalidArgumentError(
            absl::StrCat(dir, ": tensor '", name, "' has shape ", ShapeString(it->second.sizes()),
                         " but the config implies ", ShapeString(t.sizes())));
        return;
      }
      t.copy_(it->second);
    }
  }));
  VLC_RETURN_IF_ERROR(status);
  return m;
}

std::vector<at::Tensor> TrainableLlava::parameters() const {
  std::vector<at::Tensor> out;
  for (const auto& [name, t] : tensors_) {
    if (t.requires_grad()) out.push_back(t);
  }
  return out;
}

int64_t TrainableLlava::NumTrainableParameters() const {
  int64_t n = 0;
  for (const auto& t : parameters()) n += t.numel();
  return n;
}

std::unique_ptr<torch::optim::AdamW> TrainableLlava::NewAdamW(const AdamWSettings& s) const {
  std::vector<at::Tensor> decay, no_decay;
  for (const auto& t : parameters()) (t.dim() >= 2 ? decay : no_decay).push_back(t);
  torch::optim::AdamWOptions options(s.lr);
  options.betas({s.beta1, s.beta2}).eps(s.eps).weight_decay(s.weight_decay);
  torch::optim::AdamWOptions no_decay_options = options;
  no_decay_options.weight_decay(0.0);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(options));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(no_decay_options));
  return std::make_unique<torch::optim::AdamW>(std::move(groups), options);
}

absl::StatusOr<at::Tensor> TrainableLlava::EncodeImages(const at::Tensor& pixel_values) const {
  const auto& v = config_.vision;
  if (pixel_values.dim() != 4 || pixel_values.size(1) != v.num_channels ||
      pixel_values.size(2) != v.image_size || pixel_values.size(3) != v.image_size) {
    return absl::InvalidArgumentError(absl::StrCat("pixel values must be [n, ", v.num_channels,
                                                   ", ", v.image_size, ", ", v.image_size,
                                                   "], got ", ShapeString(pixel_values.sizes())));
  }
  at::Tensor out;
  VLC_RETURN_IF_ERROR(CatchAll("vision tower", [&] {
    const Params& p = *p_;
    const int64_t n = pixel_values.size(0), hv = v.hidden_size, heads = v.num_attention_heads;
    const int64_t hd = hv / heads;
    auto x = at::conv2d(pixel_values.to(at::kFloat), p.patch_w, {}, v.patch_size);
    x = x.flatten(2).transpose(1, 2);  // [n, patches, hv]
    x = at::cat({p.class_emb.view({1, 1, hv}).expand({n, 1, hv}), x}, 1) + p.pos_emb.unsqueeze(0);
    x = at::layer_norm(x, {hv}, p.pre_ln_w, p.pre_ln_b, v.layer_norm_eps);
    const int64_t t = x.size(1);
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    for (int i = 0; i < p.vision_layers_used; ++i) {
      const auto& l = p.vision_layers[i];
      auto h = at::layer_norm(x, {hv}, l.ln1_w, l.ln1_b, v.layer_norm_eps);
      auto heads_of = [&](const at::Tensor& w, const at::Tensor& b) {
        return at::linear(h, w, b).view({n, t, heads, hd}).transpose(1, 2);  // [n, heads, t, hd]
      };
      auto q = heads_of(l.q_w, l.q_b), k = heads_of(l.k_w, l.k_b), vv = heads_of(l.v_w, l.v_b);
      auto s = at::matmul(q, k.transpose(-1, -2)).mul(scale);
      auto a = at::matmul(at::softmax(s, -1), vv);
      a = a.transpose(1, 2).reshape({n, t, hv});
      x = x + at::linear(a, l.out_w, l.out_b);
      h = at::layer_norm(x, {hv}, l.ln2_w, l.ln2_b, v.layer_norm_eps);
      x = x +
          at::linear(Activation(at::linear(h, l.fc1_w, l.fc1_b), v.hidden_act), l.fc2_w, l.fc2_b);
    }
    if (config_.vision_feature_select_strategy == "default") x = x.slice(1, 1);
    x = x.reshape({-1, hv});
    x = at::linear(x, p.proj1_w, p.proj1_b);
    out = at::linear(Activation(x, config_.projector_hidden_act), p.proj2_w, p.proj2_b);
  }));
  return out;
}

namespace {

// A batch's ids checked against the config: `lookup` [B, T] reads the embedding table (padding
// and image positions read row 0, to be replaced or ignored) and `image_mask` [B, T] marks the
// image positions. Row-major order over image_mask is the order of the images' visual tokens,
// since each sequence owns the next run of images.
struct PreparedIds {
  at::Tensor lookup, image_mask;
  int64_t images = 0;
};

absl::StatusOr<PreparedIds> PrepareIds(const TrainBatch& batch, const LlavaConfig& c) {
  const at::Tensor& input_ids = batch.input_ids;
  if (!input_ids.defined() || input_ids.dim() != 2 || input_ids.size(0) == 0 ||
      input_ids.size(1) == 0 || !at::isIntegralType(input_ids.scalar_type(), false)) {
    return absl::InvalidArgumentError("input_ids must be a non-empty [B, T] integer tensor");
  }
  const int64_t batch_size = input_ids.size(0), seq_len = input_ids.size(1);
  if (static_cast<int64_t>(batch.lengths.size()) != batch_size ||
      static_cast<int64_t>(batch.images_per_sequence.size()) != batch_size) {
    return absl::InvalidArgumentError(absl::StrCat("a batch of ", batch_size, " sequences needs ",
                                                   batch_size, " lengths and image counts, got ",
                                                   batch.lengths.size(), " and ",
                                                   batch.images_per_sequence.size()));
  }
  PreparedIds out;
  out.images = batch.pixel_values.defined() ? batch.pixel_values.size(0) : 0;
  const int64_t per_image = c.visual_tokens_per_image();
  const at::Tensor ids = input_ids.to(at::kLong).contiguous();
  out.lookup = at::zeros({batch_size, seq_len}, at::kLong);
  out.image_mask = at::zeros({batch_size, seq_len}, at::kBool);
  auto in = ids.accessor<int64_t, 2>();
  auto lookup = out.lookup.accessor<int64_t, 2>();
  auto is_image = out.image_mask.accessor<bool, 2>();
  int64_t images_owned = 0;
  for (int64_t b = 0; b < batch_size; ++b) {
    const int64_t len = batch.lengths[b];
    if (len < 1 || len > seq_len) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", b, " has length ", len, ", outside [1, ", seq_len, "]"));
    }
    if (batch.images_per_sequence[b] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", b, " has a negative image count"));
    }
    int64_t image_tokens = 0;
    for (int64_t i = 0; i < len; ++i) {
      const int64_t id = in[b][i];
      if (id == c.image_token_index) {
        is_image[b][i] = true;
        ++image_tokens;
      } else if (id < 0 || id >= c.text.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", id, " at sequence ", b, " position ", i,
                         " is outside the vocabulary [0, ", c.text.vocab_size, ")"));
      } else {
        lookup[b][i] = id;
      }
    }
    const int64_t expected = batch.images_per_sequence[b] * per_image;
    if (image_tokens != expected) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", b, " has ", image_tokens, " image tokens but its ",
                       batch.images_per_sequence[b], " images give ", expected, " visual tokens"));
    }
    images_owned += batch.images_per_sequence[b];
  }
  if (images_owned != out.images) {
    return absl::InvalidArgumentError(absl::StrCat("the sequences own ", images_owned,
                                                   " images but pixel_values holds ", out.images));
  }
  return out;
}

// The masks of a compressed batch (see TrainBatch): answer rows [B, T] and, per decoder layer, the
// evicted prompt keys [B, hkv, T]; INVALID_ARGUMENT for plans that do not fit the batch.
absl::StatusOr<std::pair<at::Tensor, std::vector<at::Tensor>>> CompressionMasks(
    const TrainBatch& batch, const LlavaConfig& c, int64_t seq_len) {
  const int64_t n = static_cast<int64_t>(batch.lengths.size());
  const int layers = c.text.num_hidden_layers;
  const int64_t hkv = c.text.num_key_value_heads;
  if (static_cast<int64_t>(batch.prompt_lengths.size()) != n ||
      static_cast<int64_t>(batch.plans.size()) != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("a compressed batch needs one prompt length and one plan per sequence (", n,
                     "), got ", batch.prompt_lengths.size(), " and ", batch.plans.size()));
  }
  auto answer_rows = at::zeros({n, seq_len}, at::kBool);
  std::vector<at::Tensor> evicted(layers);
  for (auto& e : evicted) e = at::zeros({n, hkv, seq_len}, at::kBool);
  for (int64_t b = 0; b < n; ++b) {
    const int64_t m = batch.prompt_lengths[b];
    if (m == 0) continue;
    if (m < 0 || m > batch.lengths[b]) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", b, ": prompt length ", m,
                                                     " outside [0, ", batch.lengths[b], "]"));
    }
    if (static_cast<int>(batch.plans[b].layers.size()) != layers) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", b, ": its plan has ",
                                                     batch.plans[b].layers.size(),
                                                     " layers, the model ", layers));
    }
    answer_rows[b].slice(0, m, batch.lengths[b]).fill_(true);
    for (int l = 0; l < layers; ++l) {
      const at::Tensor& pos = batch.plans[b].layers[l].positions;
      if (!pos.defined()) continue;  // the layer keeps everything
      if (pos.dim() != 2 || pos.size(0) != hkv ||
          (pos.numel() > 0 && (pos.min().item<int64_t>() < 0 || pos.max().item<int64_t>() >= m))) {
        return absl::InvalidArgumentError(
            absl::StrCat("sequence ", b, " layer ", l, ": plan positions must be [", hkv,
                         ", keep] within the prompt [0, ", m, "), got ", ShapeString(pos.sizes())));
      }
      auto e = evicted[l][b].slice(1, 0, m);
      e.fill_(true);
      e.scatter_(1, pos.to(at::kLong), false);
    }
  }
  return std::make_pair(answer_rows, evicted);
}

}  // namespace

// What ObservePrompts asks of a forward: per sequence, its prompt length and spec in, its
// layers' observations out.
struct TrainableLlava::Observe {
  const std::vector<int64_t>* prompt_lengths;
  const std::vector<kvcache::ObservationSpec>* specs;
  std::vector<std::vector<kvcache::LayerObservation>> out;
};

absl::StatusOr<at::Tensor> TrainableLlava::Forward(const TrainBatch& batch, at::Tensor* visual_out,
                                                   at::Tensor* decoder_visual_out,
                                                   int decoder_layer) const {
  return ForwardImpl(batch, visual_out, decoder_visual_out, decoder_layer, nullptr);
}

absl::StatusOr<std::vector<std::vector<kvcache::LayerObservation>>> TrainableLlava::ObservePrompts(
    const TrainBatch& batch, const std::vector<int64_t>& prompt_lengths,
    const std::vector<kvcache::ObservationSpec>& specs) const {
  const size_t n = batch.lengths.size();
  if (prompt_lengths.size() != n || specs.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("ObservePrompts needs one prompt length and one spec per sequence (", n,
                     "), got ", prompt_lengths.size(), " and ", specs.size()));
  }
  for (size_t b = 0; b < n; ++b) {
    if (prompt_lengths[b] < 0 || prompt_lengths[b] > batch.lengths[b] ||
        (specs[b].enabled &&
         (specs[b].query_begin < 0 || specs[b].query_begin >= prompt_lengths[b]))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sequence ", b, ": prompt length ", prompt_lengths[b], " (of ", batch.lengths[b],
          " tokens) with observed rows from ", specs[b].query_begin));
    }
  }
  at::NoGradGuard no_grad;
  TrainBatch plain = batch;
  plain.prompt_lengths.clear();
  plain.plans.clear();
  Observe observe{&prompt_lengths, &specs, {}};
  observe.out.resize(n);
  VLC_RETURN_IF_ERROR(ForwardImpl(plain, nullptr, nullptr, 0, &observe).status());
  return std::move(observe.out);
}

absl::StatusOr<at::Tensor> TrainableLlava::ForwardImpl(const TrainBatch& batch,
                                                       at::Tensor* visual_out,
                                                       at::Tensor* decoder_visual_out,
                                                       int decoder_layer, Observe* observe) const {
  const auto& t = config_.text;
  if (decoder_visual_out != nullptr &&
      (decoder_layer < 0 || decoder_layer >= t.num_hidden_layers)) {
    return absl::InvalidArgumentError(absl::StrCat("decoder_layer must be in [0, ",
                                                   t.num_hidden_layers, "), got ", decoder_layer));
  }
  VLC_ASSIGN_OR_RETURN(PreparedIds ids, PrepareIds(batch, config_));
  const int64_t batch_size = ids.lookup.size(0), seq_len = ids.lookup.size(1);
  // A compressed batch: which rows decode through the compressed cache, and per layer which prompt
  // keys each sequence's plan evicted.
  at::Tensor answer_rows;
  std::vector<at::Tensor> evicted;
  if (!batch.prompt_lengths.empty() || !batch.plans.empty()) {
    VLC_ASSIGN_OR_RETURN(auto masks, CompressionMasks(batch, config_, seq_len));
    answer_rows = std::move(masks.first);
    evicted = std::move(masks.second);
  }
  const int64_t images = ids.images;
  at::Tensor visual;
  if (images > 0) {
    VLC_ASSIGN_OR_RETURN(visual, EncodeImages(batch.pixel_values));
  }
  if (visual_out != nullptr) *visual_out = visual;
  at::Tensor logits;
  VLC_RETURN_IF_ERROR(CatchAll("forward", [&] {
    const Params& p = *p_;
    const int64_t h = t.num_attention_heads, hkv = t.num_key_value_heads, hd = t.head_dim;
    const int64_t group = h / hkv;
    at::Tensor x = at::embedding(p.embed, ids.lookup);  // [B, T, hidden]
    if (images > 0) x = at::index_put(x, {ids.image_mask}, visual);

    auto freqs =
        at::arange(0, seq_len, at::kLong).to(at::kFloat).unsqueeze(1) * p.inv_freq.unsqueeze(0);
    auto emb = at::cat({freqs, freqs}, -1);
    const at::Tensor cos = emb.cos(), sin = emb.sin();  // [T, hd]
    const std::vector<AttentionBlock> blocks = AttentionBlocks(seq_len, group, t.sliding_window);
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    for (size_t li = 0; li < p.text_layers.size(); ++li) {
      const auto& l = p.text_layers[li];
      auto hn = RmsNorm(x, l.in_norm, t.rms_norm_eps);
      auto heads_of = [&](const at::Tensor& w, int64_t n) {
        return at::linear(hn, w).view({batch_size, seq_len, n, hd}).transpose(1, 2);
      };
      auto q = ApplyRope(heads_of(l.q_w, h), cos, sin);    // [B, h, T, hd]
      auto k = ApplyRope(heads_of(l.k_w, hkv), cos, sin);  // [B, hkv, T, hd]
      auto v = heads_of(l.v_w, hkv);
      if (observe != nullptr) {
        for (int64_t b = 0; b < batch_size; ++b) {
          const int64_t m = (*observe->prompt_lengths)[b];
          const kvcache::ObservationSpec& spec = (*observe->specs)[b];
          if (m == 0 || !spec.enabled) continue;
          // The engine's prefill observes rows [query_begin, m) against the prompt's keys; only
          // those rows are computed here (row i of the slice sits at position query_begin + i).
          kvcache::ObservationSpec rows = spec;
          rows.query_begin = 0;
          kvcache::LayerObservation obs;
          kvcache::CausalAttention(q[b].slice(1, spec.query_begin, m), k[b].slice(1, 0, m),
                                   v[b].slice(1, 0, m), scale, t.sliding_window, &rows, &obs);
          observe->out[b].push_back(std::move(obs));
        }
      }
      auto a = BlockedCausalAttention(q, k, v, blocks, scale, answer_rows,
                                      evicted.empty() ? at::Tensor() : evicted[li]);
      x = x + at::linear(a, l.o_w);
      hn = RmsNorm(x, l.post_norm, t.rms_norm_eps);
      x = x + at::linear(at::silu(at::linear(hn, l.gate_w)) * at::linear(hn, l.up_w), l.down_w);
      if (decoder_visual_out != nullptr && static_cast<int>(li) == decoder_layer) {
        *decoder_visual_out = images > 0 ? x.index({ids.image_mask}) : at::Tensor();
      }
    }
    // An observing pass (ObservePrompts) reads the attention only.
    if (observe == nullptr) logits = at::linear(RmsNorm(x, p.norm, t.rms_norm_eps), p.lm_head);
  }));
  return logits;
}

absl::StatusOr<at::Tensor> TrainableLlava::Loss(const at::Tensor& logits, const at::Tensor& targets,
                                                const at::Tensor& mask, Weighting weighting) {
  if (!logits.defined() || logits.dim() != 3 || !targets.defined() || !mask.defined() ||
      targets.sizes() != logits.sizes().slice(0, 2) || mask.sizes() != targets.sizes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("loss needs logits [B, T, vocab] with targets and mask [B, T], got ",
                     logits.defined() ? ShapeString(logits.sizes()) : "undefined", ", ",
                     targets.defined() ? ShapeString(targets.sizes()) : "undefined", ", ",
                     mask.defined() ? ShapeString(mask.sizes()) : "undefined"));
  }
  const int64_t vocab = logits.size(2);
  at::Tensor loss;
  absl::Status status;
  VLC_RETURN_IF_ERROR(CatchAll("loss", [&] {
    auto selected = mask.to(at::kBool);
    auto chosen = targets.to(at::kLong).masked_select(selected);
    if (chosen.numel() == 0) {
      status = absl::InvalidArgumentError("the loss mask selects no position");
      return;
    }
    if (chosen.min().item<int64_t>() < 0 || chosen.max().item<int64_t>() >= vocab) {
      status = absl::InvalidArgumentError(
          absl::StrCat("a masked target is outside the vocabulary [0, ", vocab, ")"));
      return;
    }
    // Unmasked targets become nll_loss's ignore index, whose mean then runs over the mask only.
    constexpr int64_t kIgnore = -100;
    auto flat_targets =
        at::where(selected, targets.to(at::kLong), at::full_like(targets, kIgnore, at::kLong));
    if (weighting == Weighting::kPerToken) {
      loss = at::nll_loss(at::log_softmax(logits.reshape({-1, vocab}), -1),
                          flat_targets.reshape({-1}), {}, at::Reduction::Mean, kIgnore);
      return;
    }
    // Per position (0 where unselected), then each row's mean over its selected positions.
    auto per_position = at::nll_loss(at::log_softmax(logits.reshape({-1, vocab}), -1),
                                     flat_targets.reshape({-1}), {}, at::Reduction::None, kIgnore)
                            .view(targets.sizes());
    auto counts = selected.sum(1).to(per_position.scalar_type());
    auto rows = counts > 0;
    auto row_means = per_position.sum(1).masked_select(rows) / counts.masked_select(rows);
    loss = row_means.mean();
  }));
  VLC_RETURN_IF_ERROR(status);
  return loss;
}

absl::Status TrainableLlava::Export(const std::string& dir,
                                    const std::string& tokenizer_model_path) const {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  // Loaders read a shard index in preference to model.safetensors; one left over from another
  // checkpoint would shadow the weights written here.
  const std::string index = dir + "/model.safetensors.index.json";
  if (fs::exists(index, ec) && std::remove(index.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot remove the stale ", index));
  }

  std::vector<std::pair<std::string, at::Tensor>> hf;
  VLC_RETURN_IF_ERROR(CatchAll("export", [&] {
    for (const auto& [name, t] : tensors_) {
      hf.emplace_back(tools::HfWeightName(name, /*new_layout=*/false), t.detach().contiguous());
    }
  }));
  VLC_RETURN_IF_ERROR(
      engine::WriteSafetensors(dir + "/model.safetensors", hf, at::kFloat, {{"format", "pt"}}));
  const std::string config_path = dir + "/config.json";
  VLC_RETURN_IF_ERROR(WriteFileAtomic(config_path, config_.ToJson().dump(2) + "\n"));
  // Reading it back catches a config the engine would refuse before anyone tries to serve it.
  VLC_RETURN_IF_ERROR(LlavaConfig::FromFile(config_path).status());

  engine::PreprocessorConfig preprocessor;
  preprocessor.shortest_edge = config_.vision.image_size;
  preprocessor.crop_height = config_.vision.image_size;
  preprocessor.crop_width = config_.vision.image_size;
  VLC_RETURN_IF_ERROR(
      WriteFileAtomic(dir + "/preprocessor_config.json", preprocessor.ToJson().dump(2) + "\n"));
  if (!tokenizer_model_path.empty()) {
    VLC_ASSIGN_OR_RETURN(std::string tokenizer, ReadFile(tokenizer_model_path));
    VLC_RETURN_IF_ERROR(WriteFileAtomic(dir + "/tokenizer.model", tokenizer));
  }
  return absl::OkStatus();
}

namespace {

// Archive keys: tensors by position (archive keys are attribute names, which must not contain
// the dots of canonical names), names kept separately to check the layout on load.
constexpr char kConfigKey[] = "config";
constexpr char kNamesKey[] = "tensor_names";
constexpr char kTensorsKey[] = "tensors";
constexpr char kOptimizerKey[] = "optimizer";
constexpr char kStepKey[] = "step";

std::string TensorKey(size_t i) { return absl::StrCat("t", i); }

std::string JoinNames(const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  std::vector<std::string> names;
  for (const auto& [name, t] : tensors) names.push_back(name);
  return absl::StrJoin(names, "\n");
}

}  // namespace

absl::Status TrainableLlava::SaveState(const std::string& path,
                                       const torch::optim::AdamW& optimizer, int64_t step) const {
  const std::string tmp = path + ".tmp";
  VLC_RETURN_IF_ERROR(CatchAll("saving training state", [&] {
    torch::serialize::OutputArchive archive;
    archive.write(kConfigKey, c10::IValue(config_.ToJson().dump()));
    archive.write(kNamesKey, c10::IValue(JoinNames(tensors_)));
    archive.write(kStepKey, c10::IValue(step));
    torch::serialize::OutputArchive tensors;
    for (size_t i = 0; i < tensors_.size(); ++i) {
      tensors.write(TensorKey(i), tensors_[i].second.detach());
    }
    archive.write(kTensorsKey, tensors);
    torch::serialize::OutputArchive opt;
    optimizer.save(opt);
    archive.write(kOptimizerKey, opt);
    archive.save_to(tmp);
  }));
  // The rename makes the new state replace the old in one step: an interrupted save keeps the
  // previous checkpoint intact.
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path, ": ", why));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> TrainableLlava::LoadState(const std::string& path,
                                                  torch::optim::AdamW* optimizer) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  }
  absl::Status status;
  int64_t step = 0;
  VLC_RETURN_IF_ERROR(CatchAll("loading training state", [&] {
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    c10::IValue config, names, saved_step;
    archive.read(kConfigKey, config);
    archive.read(kNamesKey, names);
    archive.read(kStepKey, saved_step);
    if (config.toStringRef() != config_.ToJson().dump() ||
        names.toStringRef() != JoinNames(tensors_)) {
      status = absl::FailedPreconditionError(
          absl::StrCat(path, ": saved from a model with another config: ", config.toStringRef()));
      return;
    }
    // Everything is read and checked before anything is overwritten, so a bad file leaves the
    // model as it was.
    torch::serialize::InputArchive tensors;
    archive.read(kTensorsKey, tensors);
    std::vector<at::Tensor> loaded(tensors_.size());
    for (size_t i = 0; i < tensors_.size(); ++i) {
      tensors.read(TensorKey(i), loaded[i]);
      if (loaded[i].sizes() != tensors_[i].second.sizes()) {
        status = absl::InvalidArgumentError(absl::StrCat(
            path, ": tensor '", tensors_[i].first, "' has shape ", ShapeString(loaded[i].sizes()),
            ", expected ", ShapeString(tensors_[i].second.sizes())));
        return;
      }
    }
    torch::serialize::InputArchive opt;
    archive.read(kOptimizerKey, opt);
    optimizer->load(opt);
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < tensors_.size(); ++i) tensors_[i].second.copy_(loaded[i]);
    step = saved_step.toInt();
  }));
  VLC_RETURN_IF_ERROR(status);
  return step;
}

}  // namespace vlc::train
