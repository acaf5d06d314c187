#include "engine/model.h"

#include <ATen/ATen.h>
#include <torch/version.h>

#include <cmath>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"
#include "engine/cpu_linear.h"
#include "engine/layers.h"
#include "kvcache/attention.h"
#include "kvcache/cuda_ops.h"
#include "common/status.h"

namespace vlc::engine {
namespace {

// y = x W^T + b (int8 weights with their per-row scales): the few rows of a decode step take the
// streaming kernel, anything else at::linear (cpu_linear.h decides).
at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = at::Tensor(),
                  const at::Tensor& scales = at::Tensor()) {
  return DecodeLinear(x, w, b, scales);
}

// Softmax over the last dim; half-precision scores are normalised in float32 (as transformers
// does) and come back in their dtype. Float32 takes the plain path.
at::Tensor Softmax(const at::Tensor& s) {
  if (s.scalar_type() == at::kFloat) return at::softmax(s, -1);
  return at::softmax(s, -1, at::kFloat).to(s.scalar_type());
}

// Prefill attention of one layer. On a GPU, a fresh prompt (q and k the same rows) that no sliding
// window cuts takes LibTorch's fused attention (flash or memory-efficient, LibTorch >= 2.1), with
// the observation kernel beside it when a policy observes; everything else, and every prefill on
// LibTorch 1.x, takes CausalAttention (plain ATen, any device).
at::Tensor PrefillAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            double scale, int64_t window, bool fresh,
                            const kvcache::ObservationSpec* observe,
                            kvcache::LayerObservation* obs) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
  const int64_t heads = q.size(0), n = q.size(1), d = q.size(2), kv_heads = k.size(0);
  if (q.is_cuda() && fresh && k.size(1) == n && (window <= 0 || n <= window)) {
    // GQA as plain heads: each KV head repeated for its group (a transient copy of K and V).
    const int64_t group = heads / kv_heads;
    auto widen = [&](const at::Tensor& x) {
      return group == 1 ? x : x.unsqueeze(1).expand({kv_heads, group, n, d}).reshape({heads, n, d});
    };
    auto a = at::scaled_dot_product_attention(q.unsqueeze(0), widen(k).unsqueeze(0),
                                              widen(v).unsqueeze(0), /*attn_mask=*/{},
                                              /*dropout_p=*/0.0, /*is_causal=*/true, scale);
    if (observe && observe->enabled && obs) {
      kvcache::CudaObserveLayer(q, k, scale, window, *observe, obs);
    }
    return a.squeeze(0);
  }
#endif
  return kvcache::CausalAttention(q, k, v, scale, window, observe, obs);
}

}  // namespace

struct LlavaModel::Impl {
  struct VisionLayer {
    at::Tensor ln1_w, ln1_b, qkv_w, qkv_b, out_w, out_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
  };
  struct TextLayer {
    at::Tensor in_norm, qkv_w, o_w, post_norm, gate_up_w, down_w;
    // Per-row scales of the four matrices when they are int8 (undefined otherwise).
    at::Tensor qkv_s, o_s, gate_up_s, down_s;
  };
  at::Tensor patch_w, class_emb, pos_emb, pre_ln_w, pre_ln_b;
  std::vector<VisionLayer> vision_layers;
  at::Tensor proj1_w, proj1_b, proj2_w, proj2_b;
  at::Tensor embed, norm, lm_head;
  at::Tensor lm_head_s;  // int8 LM head's scales
  std::vector<TextLayer> text_layers;
  at::Tensor inv_freq;  // [head_dim / 2], float32 on the target device
  int vision_layers_needed = 0;
  ComputeTarget target;

  // cos, sin [t, head_dim] in the target dtype for integer positions [t] (computed in float32).
  std::pair<at::Tensor, at::Tensor> RopeTables(const at::Tensor& positions) const {
    auto freqs = positions.to(at::kFloat).unsqueeze(1) * inv_freq.unsqueeze(0);
    auto emb = at::cat({freqs, freqs}, -1);
    return {emb.cos().to(target.dtype), emb.sin().to(target.dtype)};
  }
  // Integer positions and token ids on the target device.
  at::TensorOptions Index() const {
    return at::TensorOptions().dtype(at::kLong).device(target.device);
  }
  // Every weight to the target, once (a no-op for the CPU in float32). A tied LM head stays the
  // embedding's tensor.
  void MoveTo(const ComputeTarget& t) {
    target = t;
    auto move = [&](at::Tensor& x) {
      // Int8 and float16 matrices (stored so as they were loaded) stay as they are.
      if (x.defined() && x.scalar_type() != at::kChar &&
          !(t.quantize == WeightQuantization::kFloat16 && x.scalar_type() == at::kHalf)) {
        x = x.to(t.device, t.dtype).contiguous();
      }
    };
    const bool tied = lm_head.is_same(embed);
    for (at::Tensor* x : {&patch_w, &class_emb, &pos_emb, &pre_ln_w, &pre_ln_b, &proj1_w,
                          &proj1_b, &proj2_w, &proj2_b, &embed, &norm}) {
      move(*x);
    }
    if (tied) {
      lm_head = embed;
    } else {
      move(lm_head);
    }
    for (auto& l : vision_layers) {
      for (at::Tensor* x : {&l.ln1_w, &l.ln1_b, &l.qkv_w, &l.qkv_b, &l.out_w, &l.out_b, &l.ln2_w,
                            &l.ln2_b, &l.fc1_w, &l.fc1_b, &l.fc2_w, &l.fc2_b}) {
        move(*x);
      }
    }
    for (auto& l : text_layers) {
      for (at::Tensor* x : {&l.in_norm, &l.qkv_w, &l.o_w, &l.post_norm, &l.gate_up_w, &l.down_w}) {
        move(*x);
      }
    }
    inv_freq = inv_freq.to(t.device);
  }
};

namespace {

// Matrices stacked by rows into huge-page memory (the fused projections decode streams).
at::Tensor CatRows(const std::vector<at::Tensor>& parts) {
  int64_t rows = 0;
  for (const auto& t : parts) rows += t.size(0);
  at::Tensor out = kvcache::HugePageEmpty({rows, parts[0].size(1)}, parts[0].scalar_type());
  at::cat_out(out, parts, 0);
  return out;
}

class WeightTaker {
 public:
  // Tensors are taken in `dtype` (the target's), so a bfloat16 checkpoint served in bfloat16 is
  // never widened to float32 on the way: each tensor leaves the map as it is taken.
  WeightTaker(WeightMap* w, at::ScalarType dtype) : w_(w), dtype_(dtype) {}
  // `as` overrides the dtype (float16 weights on the CPU).
  at::Tensor Take(const std::string& name, std::vector<int64_t> shape,
                  std::optional<at::ScalarType> as = std::nullopt) {
    if (!status_.ok()) return {};
    auto it = w_->find(name);
    if (it == w_->end()) {
      status_ = absl::InvalidArgumentError(
          absl::StrCat("checkpoint is missing tensor '", name, "' (canonical name)"));
      return {};
    }
    at::Tensor t = it->second;
    if (t.sizes().vec() != shape) {
      status_ = absl::InvalidArgumentError(absl::StrCat(
          "tensor '", name, "' has shape [", absl::StrJoin(t.sizes().vec(), ", "),
          "] but the config implies [", absl::StrJoin(shape, ", "), "]"));
      return {};
    }
    w_->erase(it);
    // Always a private copy: a mapped view (MapCheckpointWeights) must not outlive the load, and
    // when the map's entry and `t` go, the view's pages leave resident memory. The copy is made
    // in huge-page memory (cpu_linear.h), which decode streams faster.
    at::Tensor out = kvcache::HugePageEmpty(t.sizes(), as.value_or(dtype_));
    out.copy_(t);
    return out;
  }
  bool Has(const std::string& name) const { return w_->count(name) > 0; }
  const absl::Status& status() const { return status_; }

 private:
  WeightMap* w_;
  at::ScalarType dtype_;
  absl::Status status_;
};

}  // namespace

LlavaModel::LlavaModel(const LlavaConfig& config, const ComputeTarget& target)
    : config_(config), target_(target), impl_(new Impl) {}
LlavaModel::~LlavaModel() = default;

absl::StatusOr<std::unique_ptr<LlavaModel>> LlavaModel::Load(const std::string& dir,
                                                              const ComputeTarget& target) {
  VLC_ASSIGN_OR_RETURN(LlavaConfig config, LlavaConfig::FromFile(dir + "/config.json"));
  // Mapped, not read: each tensor is copied out in the target's dtype as the model takes it, and
  // its pages are released then, so loading never holds the checkpoint twice (nor a float32 copy
  // of a bfloat16 one).
  VLC_ASSIGN_OR_RETURN(WeightMap weights, MapCheckpointWeights(dir));
  auto model = FromWeights(config, std::move(weights), target);
  if (!model.ok()) {
    return absl::Status(model.status().code(), absl::StrCat(dir, ": ", model.status().message()));
  }
  return model;
}

absl::StatusOr<std::unique_ptr<LlavaModel>> LlavaModel::FromWeights(const LlavaConfig& c,
                                                                     WeightMap weights,
                                                                     const ComputeTarget& target) {
  std::unique_ptr<LlavaModel> m(new LlavaModel(c, target));
  Impl& p = *m->impl_;
  WeightTaker w(&weights, target.dtype);
  absl::Status st = CatchAll("loading weights", [&] {
    const auto& v = c.vision;
    const int64_t hv = v.hidden_size, iv = v.intermediate_size;
    p.patch_w = w.Take("vision.embeddings.patch_embedding.weight",
                       {hv, v.num_channels, v.patch_size, v.patch_size});
    p.class_emb = w.Take("vision.embeddings.class_embedding", {hv});
    p.pos_emb = w.Take("vision.embeddings.position_embedding.weight", {v.num_patches() + 1, hv});
    p.pre_ln_w = w.Take("vision.pre_layrnorm.weight", {hv});
    p.pre_ln_b = w.Take("vision.pre_layrnorm.bias", {hv});
    const int fl = c.vision_feature_layer;
    p.vision_layers_needed = fl < 0 ? v.num_hidden_layers + 1 + fl : fl;
    // Layers past the feature layer never influence the output; they are not kept in memory.
    for (int i = 0; i < p.vision_layers_needed; ++i) {
      const std::string pre = absl::StrCat("vision.encoder.layers.", i, ".");
      Impl::VisionLayer l;
      l.ln1_w = w.Take(pre + "layer_norm1.weight", {hv});
      l.ln1_b = w.Take(pre + "layer_norm1.bias", {hv});
      auto q = w.Take(pre + "self_attn.q_proj.weight", {hv, hv});
      auto k = w.Take(pre + "self_attn.k_proj.weight", {hv, hv});
      auto vv = w.Take(pre + "self_attn.v_proj.weight", {hv, hv});
      auto qb = w.Take(pre + "self_attn.q_proj.bias", {hv});
      auto kb = w.Take(pre + "self_attn.k_proj.bias", {hv});
      auto vb = w.Take(pre + "self_attn.v_proj.bias", {hv});
      if (!w.status().ok()) return;
      l.qkv_w = CatRows({q, k, vv});
      l.qkv_b = at::cat({qb, kb, vb}, 0);
      l.out_w = w.Take(pre + "self_attn.out_proj.weight", {hv, hv});
      l.out_b = w.Take(pre + "self_attn.out_proj.bias", {hv});
      l.ln2_w = w.Take(pre + "layer_norm2.weight", {hv});
      l.ln2_b = w.Take(pre + "layer_norm2.bias", {hv});
      l.fc1_w = w.Take(pre + "mlp.fc1.weight", {iv, hv});
      l.fc1_b = w.Take(pre + "mlp.fc1.bias", {iv});
      l.fc2_w = w.Take(pre + "mlp.fc2.weight", {hv, iv});
      l.fc2_b = w.Take(pre + "mlp.fc2.bias", {hv});
      p.vision_layers.push_back(std::move(l));
    }
    const auto& t = c.text;
    // The decoder's matrices and the LM head in float16 (WeightQuantization::kFloat16), taken
    // straight into it; everything else in the target's dtype.
    const std::optional<at::ScalarType> matrix_dtype =
        target.quantize == WeightQuantization::kFloat16 ? std::optional<at::ScalarType>(at::kHalf)
                                                        : std::nullopt;
    const int64_t ht = t.hidden_size, hd = t.head_dim;
    const int64_t nq = t.num_attention_heads * hd, nkv = t.num_key_value_heads * hd;
    p.proj1_w = w.Take("projector.linear_1.weight", {ht, hv});
    p.proj2_w = w.Take("projector.linear_2.weight", {ht, ht});
    if (c.multimodal_projector_bias) {
      p.proj1_b = w.Take("projector.linear_1.bias", {ht});
      p.proj2_b = w.Take("projector.linear_2.bias", {ht});
    }
    p.embed = w.Take("lm.embed_tokens.weight", {t.vocab_size, ht});
    for (int i = 0; i < t.num_hidden_layers; ++i) {
      const std::string pre = absl::StrCat("lm.layers.", i, ".");
      Impl::TextLayer l;
      l.in_norm = w.Take(pre + "input_layernorm.weight", {ht});
      l.post_norm = w.Take(pre + "post_attention_layernorm.weight", {ht});
      // With int8 weights each matrix is quantized as soon as it is read, before the fused ones
      // are formed: rows are quantized independently, so the fused int8 matrix is the quantized
      // fused one, and only one matrix at a time exists in `dtype`, not a layer's.
      const bool int8 = target.quantize == WeightQuantization::kInt8;
      auto take = [&](const std::string& name, std::vector<int64_t> shape, at::Tensor* scale) {
        at::Tensor x = w.Take(pre + name, std::move(shape), matrix_dtype);
        if (!int8 || !x.defined()) return x;
        Int8Weight q8 = QuantizeInt8(x);
        *scale = std::move(q8.scale);
        return std::move(q8.q);
      };
      at::Tensor qs, ks, vs, gs, us;
      auto q = take("self_attn.q_proj.weight", {nq, ht}, &qs);
      auto k = take("self_attn.k_proj.weight", {nkv, ht}, &ks);
      auto vv = take("self_attn.v_proj.weight", {nkv, ht}, &vs);
      l.o_w = take("self_attn.o_proj.weight", {ht, nq}, &l.o_s);
      auto gate = take("mlp.gate_proj.weight", {t.intermediate_size, ht}, &gs);
      auto up = take("mlp.up_proj.weight", {t.intermediate_size, ht}, &us);
      l.down_w = take("mlp.down_proj.weight", {ht, t.intermediate_size}, &l.down_s);
      if (!w.status().ok()) return;
      // Fused projections: one pass over the activations and one BLAS call instead of three/two.
      l.qkv_w = CatRows({q, k, vv});
      l.gate_up_w = CatRows({gate, up});
      if (int8) {
        l.qkv_s = at::cat({qs, ks, vs}, 0);
        l.gate_up_s = at::cat({gs, us}, 0);
      }
      p.text_layers.push_back(std::move(l));
    }
    p.norm = w.Take("lm.norm.weight", {ht});
    if (t.tie_word_embeddings) {
      // A float16 head is its own copy; the embedding stays in `dtype` for lookups.
      p.lm_head = matrix_dtype ? p.embed.to(*matrix_dtype).contiguous() : p.embed;
    } else {
      p.lm_head = w.Take("lm_head.weight", {t.vocab_size, ht}, matrix_dtype);
    }
    if (target.quantize == WeightQuantization::kInt8 && p.lm_head.defined()) {
      // A tied head becomes a separate int8 matrix; the embedding stays in `dtype` for lookups.
      Int8Weight q8 = QuantizeInt8(p.lm_head);
      p.lm_head = std::move(q8.q);
      p.lm_head_s = std::move(q8.scale);
    }
    p.inv_freq = 1.0 / at::pow(t.rope_theta, at::arange(0, hd, 2, at::kLong).to(at::kFloat) /
                                                 static_cast<double>(hd));
  });
  VLC_RETURN_IF_ERROR(w.status());
  VLC_RETURN_IF_ERROR(st);
  weights.clear();  // what the model did not take: let it go before the copies are made
  const absl::Status moved =
      CatchAll("moving the weights to the device", [&] { p.MoveTo(target); });
  if (!moved.ok()) {
    // Mostly a GPU too small for the model: say so with the code a caller can act on.
    const bool oom = absl::StrContains(moved.message(), "out of memory");
    return absl::Status(oom ? absl::StatusCode::kResourceExhausted : moved.code(),
                        absl::StrCat(moved.message(), " (", ComputeTargetName(target), ")"));
  }
  return m;
}

int64_t LlavaModel::DecodeWeightBytes() const {
  // As stored: int8 matrices count one byte per weight plus their scales.
  auto bytes = [](const at::Tensor& x) -> int64_t {
    return x.defined() ? x.numel() * static_cast<int64_t>(x.element_size()) : 0;
  };
  int64_t n = bytes(impl_->lm_head) + bytes(impl_->lm_head_s) + bytes(impl_->norm);
  for (const auto& l : impl_->text_layers) {
    for (const at::Tensor* x : {&l.in_norm, &l.qkv_w, &l.o_w, &l.post_norm, &l.gate_up_w,
                                &l.down_w, &l.qkv_s, &l.o_s, &l.gate_up_s, &l.down_s}) {
      n += bytes(*x);
    }
  }
  return n;
}

absl::StatusOr<at::Tensor> LlavaModel::EncodeImages(const at::Tensor& pixel_values) const {
  const auto& v = config_.vision;
  if (pixel_values.dim() != 4 || pixel_values.size(1) != v.num_channels ||
      pixel_values.size(2) != v.image_size || pixel_values.size(3) != v.image_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pixel values must be [n, ", v.num_channels, ", ", v.image_size, ", ", v.image_size,
        "], got [", absl::StrJoin(pixel_values.sizes().vec(), ", "), "]"));
  }
  at::Tensor out;
  VLC_RETURN_IF_ERROR(CatchAll("vision tower", [&] {
    const Impl& p = *impl_;
    const int64_t n = pixel_values.size(0), hv = v.hidden_size, heads = v.num_attention_heads;
    const int64_t hd = hv / heads;
    // A picture's few dozen tokens are a decode step's row count: its products take Linear (the
    // streaming kernel on the CPU), which reads each weight once, where the BLAS's GEMM packs the
    // whole matrix on every call and costs several times the arithmetic at these sizes. Rows of
    // x [..., in] are flattened for it.
    auto linear = [](const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
      auto sizes = x.sizes().vec();
      sizes.back() = w.size(0);
      return Linear(x.reshape({-1, x.size(-1)}), w, b).view(sizes);
    };
    const at::Tensor pixels = pixel_values.to(p.target.device, p.target.dtype);
    at::Tensor x;
    const int64_t ps = v.patch_size, grid = v.image_size / ps;
    if (pixels.device().is_cpu() && grid * ps == v.image_size) {
      // The patch embedding (a convolution whose stride is its kernel) as a product of each
      // patch's pixels, in the kernel's (channel, row, column) order, with the kernel.
      const auto patches = pixels.reshape({n, v.num_channels, grid, ps, grid, ps})
                               .permute({0, 2, 4, 1, 3, 5})
                               .reshape({n, grid * grid, v.num_channels * ps * ps});
      x = linear(patches, p.patch_w.view({hv, -1}), {});  // [n, patches, hv]
    } else {
      x = at::conv2d(pixels, p.patch_w, {}, ps).flatten(2).transpose(1, 2);  // [n, patches, hv]
    }
    x = at::cat({p.class_emb.view({1, 1, hv}).expand({n, 1, hv}), x}, 1) + p.pos_emb.unsqueeze(0);
    x = at::layer_norm(x, {hv}, p.pre_ln_w, p.pre_ln_b, v.layer_norm_eps);
    const int64_t t = x.size(1);
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    for (const auto& l : p.vision_layers) {
      auto h = at::layer_norm(x, {hv}, l.ln1_w, l.ln1_b, v.layer_norm_eps);
      auto qkv = linear(h, l.qkv_w, l.qkv_b).view({n, t, 3, heads, hd}).permute({2, 0, 3, 1, 4});
      auto s = at::matmul(qkv[0], qkv[1].transpose(-1, -2)).mul_(scale);
      auto a = at::matmul(Softmax(s), qkv[2]);  // [n, heads, t, hd]
      a = a.permute({0, 2, 1, 3}).reshape({n, t, hv});
      x = x + linear(a, l.out_w, l.out_b);
      h = at::layer_norm(x, {hv}, l.ln2_w, l.ln2_b, v.layer_norm_eps);
      h = linear(Activation(linear(h, l.fc1_w, l.fc1_b), v.hidden_act), l.fc2_w, l.fc2_b);
      x = x + h;
    }
    if (config_.vision_feature_select_strategy == "default") x = x.slice(1, 1);
    x = x.reshape({-1, hv});
    x = linear(x, p.proj1_w, p.proj1_b);
    x = linear(Activation(x, config_.projector_hidden_act), p.proj2_w, p.proj2_b);
    out = x;
  }));
  return out;
}

absl::StatusOr<at::Tensor> LlavaModel::EmbedPrompt(const std::vector<int>& ids,
                                                   const at::Tensor& visual) const {
  const int image_id = config_.image_token_index;
  const int vocab = config_.text.vocab_size;
  int64_t image_tokens = 0;
  std::vector<int64_t> safe(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] == image_id) {
      ++image_tokens;
      safe[i] = 0;
    } else if (ids[i] < 0 || ids[i] >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", ids[i], " at position ", i, " is outside the vocabulary [0, ",
                       vocab, ")"));
    } else {
      safe[i] = ids[i];
    }
  }
  const int64_t given = visual.defined() ? visual.size(0) : 0;
  if (image_tokens != given) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", image_tokens,
                                                   " image tokens but the media gave ", given,
                                                   " visual tokens"));
  }
  at::Tensor out;
  VLC_RETURN_IF_ERROR(CatchAll("embedding", [&] {
    auto idx = at::tensor(safe, at::kLong).to(impl_->target.device);
    out = at::embedding(impl_->embed, idx);
    if (image_tokens > 0) {
      auto mask = at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong) == image_id;
      out.index_put_({mask.to(impl_->target.device)}, visual.to(out.options()));
    }
  }));
  return out;
}

absl::StatusOr<at::Tensor> LlavaModel::Prefill(
    SeqId seq, const at::Tensor& embeds, int64_t start_pos, KvCache* cache, bool all_logits,
    const kvcache::ObservationSpec* observe,
    std::vector<kvcache::LayerObservation>* observations) const {
  PromptChunk chunk{seq, embeds, start_pos, all_logits, observe, observations};
  VLC_ASSIGN_OR_RETURN(StepLogits out, Step(nullptr, &chunk, cache));
  return std::move(out.chunk);
}

absl::StatusOr<at::Tensor> LlavaModel::DecodeStep(const std::vector<SeqId>& seqs,
                                                  const std::vector<int>& tokens,
                                                  const std::vector<int64_t>& positions,
                                                  KvCache* cache) const {
  DecodeRows rows{seqs, tokens, positions};
  VLC_ASSIGN_OR_RETURN(StepLogits out, Step(&rows, nullptr, cache));
  return std::move(out.decode);
}

absl::StatusOr<LlavaModel::StepLogits> LlavaModel::Step(const DecodeRows* decode,
                                                        const PromptChunk* chunk,
                                                        KvCache* cache) const {
  const auto& t = config_.text;
  const int64_t b = decode ? static_cast<int64_t>(decode->seqs.size()) : 0;
  const int64_t n = chunk ? chunk->embeds.size(0) : 0;
  const char* what = chunk ? "prefill" : "decode";
  if (decode && (b == 0 || decode->tokens.size() != decode->seqs.size() ||
                 decode->positions.size() != decode->seqs.size())) {
    return absl::InvalidArgumentError("decode step needs one token and position per sequence");
  }
  if (decode) {
    for (int tok : decode->tokens) {
      if (tok < 0 || tok >= t.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", tok, " is outside the vocabulary"));
      }
    }
  }
  if (chunk && (chunk->embeds.dim() != 2 || chunk->embeds.size(1) != t.hidden_size || n == 0)) {
    return absl::InvalidArgumentError("prefill needs embeddings [tokens > 0, hidden]");
  }
  if (b + n == 0) return absl::InvalidArgumentError("a step needs decode rows or a prompt chunk");
  const int64_t h = t.num_attention_heads, hkv = t.num_key_value_heads, hd = t.head_dim;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  const Impl& p = *impl_;
  const bool observing =
      chunk && chunk->observe && chunk->observe->enabled && chunk->observations;
  if (observing) chunk->observations->assign(p.text_layers.size(), {});
  // A chunk of a longer prompt observes its own rows of the observed range, in its own row
  // coordinates, against every key so far (kvcache/attention.h); a chunk wholly before the range
  // observes nothing.
  kvcache::ObservationSpec local;
  if (observing) {
    local = *chunk->observe;
    local.query_begin = std::max<int64_t>(0, chunk->observe->query_begin - chunk->start_pos);
  }
  const bool chunk_observes = observing && local.query_begin < n;
  // Rows [0, b) are the decode step's, rows [b, b + n) the chunk's: every matrix product runs
  // over all of them at once, so the weights are read once for both.
  at::Tensor x, cos, sin;
  VLC_RETURN_IF_ERROR(CatchAll(what, [&] {
    std::vector<at::Tensor> xs, pos;
    if (decode) {
      xs.push_back(at::embedding(
          p.embed, at::tensor(std::vector<int64_t>(decode->tokens.begin(), decode->tokens.end()))
                       .to(p.target.device)));
      pos.push_back(at::tensor(decode->positions, at::kLong).to(p.target.device));
    }
    if (chunk) {
      xs.push_back(chunk->embeds.to(p.target.device, p.target.dtype));
      pos.push_back(at::arange(chunk->start_pos, chunk->start_pos + n, p.Index()));
    }
    x = xs.size() == 1 ? xs[0] : at::cat(xs);
    std::tie(cos, sin) = p.RopeTables(pos.size() == 1 ? pos[0] : at::cat(pos));
    cos = cos.unsqueeze(1);  // [rows, 1, hd]: broadcast over heads
    sin = sin.unsqueeze(1);
  }));
  for (size_t li = 0; li < p.text_layers.size(); ++li) {
    const auto& l = p.text_layers[li];
    at::Tensor q, k, v;
    VLC_RETURN_IF_ERROR(CatchAll(what, [&] {
      auto qkv = Linear(RmsNorm(x, l.in_norm, t.rms_norm_eps), l.qkv_w, {}, l.qkv_s);
      q = ApplyRope(qkv.slice(1, 0, h * hd).view({b + n, h, hd}), cos, sin);
      k = ApplyRope(qkv.slice(1, h * hd, (h + hkv) * hd).view({b + n, hkv, hd}), cos, sin);
      v = qkv.slice(1, (h + hkv) * hd).view({b + n, hkv, hd});
    }));
    std::vector<at::Tensor> attended;
    if (decode) {
      VLC_RETURN_IF_ERROR(
          cache->AppendBatch(decode->seqs, static_cast<int>(li), k.slice(0, 0, b), v.slice(0, 0, b)));
      VLC_ASSIGN_OR_RETURN(auto a, cache->DecodeAttention(static_cast<int>(li), decode->seqs,
                                                          q.slice(0, 0, b), scale,
                                                          t.sliding_window));
      attended.push_back(a.reshape({b, h * hd}));
    }
    if (chunk) {
      at::Tensor qc, kc, vc;
      VLC_RETURN_IF_ERROR(CatchAll(what, [&] {
        qc = q.slice(0, b).transpose(0, 1);
        kc = k.slice(0, b).transpose(0, 1);
        vc = v.slice(0, b).transpose(0, 1).contiguous();
      }));
      const SeqId seq = chunk->seq;
      const bool fresh = cache->Length(seq, static_cast<int>(li)) == 0;
      if (observing && cache->Length(seq, static_cast<int>(li)) != chunk->start_pos) {
        return absl::FailedPreconditionError(
            "a prefill that observes must continue an uncompressed cache of start_pos tokens");
      }
      VLC_RETURN_IF_ERROR(cache->Append(seq, static_cast<int>(li), kc, vc));
      if (!fresh) {
        // Continuing a sequence: attend over everything the cache holds, ours at the end (in the
        // model's dtype: a CPU cache holds float32 whatever the model computes in).
        VLC_ASSIGN_OR_RETURN(auto kv, cache->Read(seq, static_cast<int>(li)));
        kc = kv.first.to(qc.scalar_type());
        vc = kv.second.to(qc.scalar_type());
      }
      VLC_RETURN_IF_ERROR(CatchAll(what, [&] {
        kvcache::LayerObservation* obs = chunk_observes ? &(*chunk->observations)[li] : nullptr;
        auto a = PrefillAttention(qc, kc, vc, scale, t.sliding_window, fresh,
                                  chunk_observes ? &local : nullptr, obs);
        attended.push_back(a.transpose(0, 1).reshape({n, h * hd}));
      }));
    }
    VLC_RETURN_IF_ERROR(CatchAll(what, [&] {
      auto a = attended.size() == 1 ? attended[0] : at::cat(attended);
      x = x + Linear(a, l.o_w, {}, l.o_s);
      auto gu = Linear(RmsNorm(x, l.post_norm, t.rms_norm_eps), l.gate_up_w, {}, l.gate_up_s);
      const int64_t inter = t.intermediate_size;
      x = x + Linear(at::silu(gu.slice(1, 0, inter)) * gu.slice(1, inter), l.down_w, {},
                     l.down_s);
    }));
  }
  StepLogits out;
  VLC_RETURN_IF_ERROR(CatchAll(what, [&] {
    // The decode rows, and the chunk's last row (every row with all_logits), in one product.
    const bool all = chunk && chunk->all_logits;
    std::vector<at::Tensor> rows;
    if (decode) rows.push_back(x.slice(0, 0, b));
    if (chunk) rows.push_back(all ? x.slice(0, b) : x.slice(0, b + n - 1));
    auto last = rows.size() == 1 ? rows[0] : at::cat(rows);
    auto logits = Linear(RmsNorm(last, p.norm, t.rms_norm_eps), p.lm_head, {}, p.lm_head_s)
                      .to(at::kCPU, at::kFloat);
    if (decode) out.decode = logits.slice(0, 0, b);
    if (chunk) out.chunk = logits.slice(0, b);
  }));
  return out;
}

absl::StatusOr<at::Tensor> LlavaModel::ForwardFull(const at::Tensor& embeds) const {
  auto cache = NewContiguousCache();
  VLC_RETURN_IF_ERROR(cache->AddSequence(0));
  return Prefill(0, embeds, 0, cache.get(), /*all_logits=*/true);
}

std::unique_ptr<KvCache> LlavaModel::NewContiguousCache() const {
  return std::make_unique<kvcache::ContiguousKvCache>(
      config_.text.num_hidden_layers, config_.text.num_key_value_heads, config_.text.head_dim,
      target_.dtype, target_.device);
}

}  // namespace vlc::engine
