// LSTM recurrence over [T] steps for K stacked cores, with the state reset to an initial
// state wherever an episode starts inside the sequence.
//
// Why by hand: torch's fused LSTM (oneDNN on CPU, cuDNN on GPU) cannot reset the state in
// the middle of a sequence, so chunks must be split at episode ends and padded: short
// CartPole episodes pad 256 rollout steps to ~450 slots, and its cost is per slot. This
// kernel runs unpadded chunks, batches the actor's and the critic's cores into one bmm per
// step, and leaves the input projection (one large GEMM) to autograd outside it.
//
// Layout: xg [T, K, B, 4H] is the input projection plus both biases (gate order i, f, g, o
// as in torch), w_hh [K, 4H, H], h0/c0 [K, B, H], keep [T, B] (0 resets the state to
// init_h/init_c [K, 1, H] before step t, 1 continues). Activations saved for backward:
// gates [T, K, B, 4H] (after their nonlinearity), h_prev/c_prev [T, K, B, H] (the state
// each step started from, after any reset), tanh_c [T, K, B, H].
#include <torch/extension.h>

#include <vector>

namespace {

// out = keep ? prev : init, row by row ([K, B, H] states, init [K, 1, H]).
template <typename scalar_t>
void reset_state(const scalar_t* prev, const scalar_t* init, const scalar_t* keep, scalar_t* out,
                 int64_t K, int64_t B, int64_t H) {
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t b = 0; b < B; ++b) {
      const scalar_t* src = keep[b] != 0 ? prev + (k * B + b) * H : init + k * H;
      scalar_t* dst = out + (k * B + b) * H;
      for (int64_t j = 0; j < H; ++j) dst[j] = src[j];
    }
  }
}

std::vector<at::Tensor> forward(const at::Tensor& xg, const at::Tensor& w_hh, const at::Tensor& h0,
                                const at::Tensor& c0, const at::Tensor& keep,
                                const at::Tensor& init_h, const at::Tensor& init_c) {
  TORCH_CHECK(xg.dim() == 4 && w_hh.dim() == 3, "xg [T, K, B, 4H] and w_hh [K, 4H, H]");
  const int64_t T = xg.size(0), K = xg.size(1), B = xg.size(2), H = w_hh.size(2);
  TORCH_CHECK(xg.size(3) == 4 * H && w_hh.size(0) == K && w_hh.size(1) == 4 * H);
  TORCH_CHECK(xg.device().is_cpu(), "esper's LSTM kernel runs on the CPU only");
  for (const at::Tensor& t : {w_hh, h0, c0, init_h, init_c}) {
    TORCH_CHECK(t.scalar_type() == xg.scalar_type(), "the kernel's inputs share one dtype");
  }
  auto opts = xg.options();
  // tanh(x) = 2 * sigmoid(2x) - 1: the g gate and tanh(c) reuse ATen's vectorised sigmoid,
  // with the factor 2 folded into the g gate's rows of xg and w_hh.
  at::Tensor xg2 = xg.contiguous().clone();
  xg2.narrow(3, 2 * H, H).mul_(2);
  at::Tensor w2 = w_hh.clone();
  w2.narrow(1, 2 * H, H).mul_(2);
  const at::Tensor w2t = w2.transpose(1, 2);  // [K, H, 4H]
  // The gate buffer starts as xg: each step adds h_prev @ w_hh^T into it in place.
  at::Tensor& gates = xg2;
  at::Tensor h_prev = at::empty({T, K, B, H}, opts);
  at::Tensor c_prev = at::empty({T, K, B, H}, opts);
  at::Tensor cs = at::empty({T, K, B, H}, opts);
  at::Tensor tanh_c = at::empty({T, K, B, H}, opts);
  at::Tensor hs = at::empty({T, K, B, H}, opts);
  at::Tensor keep_c = keep.to(xg.scalar_type()).contiguous();
  const at::Tensor ih = init_h.contiguous(), ic = init_c.contiguous();
  const at::Tensor h0c = h0.contiguous(), c0c = c0.contiguous();
  AT_DISPATCH_FLOATING_TYPES(xg.scalar_type(), "lstm_resets_forward", [&] {
    const scalar_t* h = h0c.data_ptr<scalar_t>();
    const scalar_t* c = c0c.data_ptr<scalar_t>();
    const int64_t state = K * B * H;
    for (int64_t t = 0; t < T; ++t) {
      const scalar_t* kp = keep_c.data_ptr<scalar_t>() + t * B;
      scalar_t* hp = h_prev.data_ptr<scalar_t>() + t * state;
      const scalar_t* cp = c_prev.data_ptr<scalar_t>() + t * state;
      reset_state(h, ih.data_ptr<scalar_t>(), kp, hp, K, B, H);
      reset_state(c, ic.data_ptr<scalar_t>(), kp, c_prev.data_ptr<scalar_t>() + t * state, K, B, H);
      at::Tensor g = gates.select(0, t);
      at::baddbmm_out(g, g, h_prev.select(0, t), w2t);
      g.sigmoid_();
      scalar_t* gp = g.data_ptr<scalar_t>();
      scalar_t* cn = cs.data_ptr<scalar_t>() + t * state;
      scalar_t* tc = tanh_c.data_ptr<scalar_t>() + t * state;
      for (int64_t r = 0; r < K * B; ++r) {
        scalar_t* __restrict__ row = gp + r * 4 * H;
        for (int64_t j = 0; j < H; ++j) {
          const scalar_t gg = 2 * row[2 * H + j] - 1;
          row[2 * H + j] = gg;
          const scalar_t cell = row[H + j] * cp[r * H + j] + row[j] * gg;
          cn[r * H + j] = cell;
          tc[r * H + j] = 2 * cell;
        }
      }
      tanh_c.select(0, t).sigmoid_();
      scalar_t* hn = hs.data_ptr<scalar_t>() + t * state;
      for (int64_t r = 0; r < K * B; ++r) {
        const scalar_t* __restrict__ row = gp + r * 4 * H;
        for (int64_t j = 0; j < H; ++j) {
          const scalar_t th = 2 * tc[r * H + j] - 1;
          tc[r * H + j] = th;
          hn[r * H + j] = row[3 * H + j] * th;
        }
      }
      h = hn;
      c = cn;
    }
  });
  return {hs, cs, gates, h_prev, c_prev, tanh_c};
}

// grad_hs: the gradient of h at every step (the final h's included: it is hs[T - 1]);
// grad_cT: that of the final c.
std::vector<at::Tensor> backward(const at::Tensor& grad_hs, const at::Tensor& grad_cT,
                                 const at::Tensor& w_hh, const at::Tensor& keep,
                                 const at::Tensor& gates, const at::Tensor& h_prev,
                                 const at::Tensor& c_prev, const at::Tensor& tanh_c) {
  const int64_t T = gates.size(0), K = gates.size(1), B = gates.size(2), H = w_hh.size(2);
  auto opts = gates.options();
  at::Tensor d_gates = at::empty({T, K, B, 4 * H}, opts);
  at::Tensor dh = at::zeros({K, B, H}, opts), dc = grad_cT.contiguous().clone();
  at::Tensor dh_prev = at::empty({K, B, H}, opts), dc_prev = at::empty({K, B, H}, opts);
  at::Tensor d_init_h = at::zeros({K, 1, H}, opts), d_init_c = at::zeros({K, 1, H}, opts);
  at::Tensor ghs = grad_hs.contiguous();
  at::Tensor keep_c = keep.to(gates.scalar_type()).contiguous();
  at::Tensor w = w_hh.contiguous();
  const int64_t state = K * B * H;
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstm_resets_backward", [&] {
    scalar_t* dhp = dh.data_ptr<scalar_t>();
    scalar_t* dcp = dc.data_ptr<scalar_t>();
    scalar_t* dhprev = dh_prev.data_ptr<scalar_t>();
    scalar_t* dcprev = dc_prev.data_ptr<scalar_t>();
    scalar_t* dih = d_init_h.data_ptr<scalar_t>();
    scalar_t* dic = d_init_c.data_ptr<scalar_t>();
    for (int64_t t = T - 1; t >= 0; --t) {
      const scalar_t* gp = gates.data_ptr<scalar_t>() + t * 4 * state;
      const scalar_t* cp = c_prev.data_ptr<scalar_t>() + t * state;
      const scalar_t* tc = tanh_c.data_ptr<scalar_t>() + t * state;
      const scalar_t* go = ghs.data_ptr<scalar_t>() + t * state;
      scalar_t* dg = d_gates.data_ptr<scalar_t>() + t * 4 * state;
      for (int64_t r = 0; r < K * B; ++r) {
        const scalar_t* __restrict__ row = gp + r * 4 * H;
        scalar_t* __restrict__ drow = dg + r * 4 * H;
        for (int64_t j = 0; j < H; ++j) {
          const int64_t s = r * H + j;
          const scalar_t i = row[j], f = row[H + j], g = row[2 * H + j], o = row[3 * H + j];
          const scalar_t dh_t = dhp[s] + go[s];
          const scalar_t th = tc[s];
          const scalar_t dc_t = dcp[s] + dh_t * o * (1 - th * th);
          drow[j] = dc_t * g * i * (1 - i);
          drow[H + j] = dc_t * cp[s] * f * (1 - f);
          drow[2 * H + j] = dc_t * i * (1 - g * g);
          drow[3 * H + j] = dh_t * th * o * (1 - o);
          dcprev[s] = dc_t * f;
        }
      }
      at::bmm_out(dh_prev, d_gates.select(0, t), w);
      const scalar_t* kp = keep_c.data_ptr<scalar_t>() + t * B;
      for (int64_t k = 0; k < K; ++k) {
        for (int64_t b = 0; b < B; ++b) {
          const int64_t base = (k * B + b) * H;
          if (kp[b] != 0) {
            for (int64_t j = 0; j < H; ++j) {
              dhp[base + j] = dhprev[base + j];
              dcp[base + j] = dcprev[base + j];
            }
          } else {
            for (int64_t j = 0; j < H; ++j) {
              dih[k * H + j] += dhprev[base + j];
              dic[k * H + j] += dcprev[base + j];
              dhp[base + j] = 0;
              dcp[base + j] = 0;
            }
          }
        }
      }
    }
  });
  // dW_hh[k] = sum over steps and batch of d_gates^T h_prev: one bmm over all T * B rows.
  at::Tensor dg_k = d_gates.permute({1, 0, 2, 3}).reshape({K, T * B, 4 * H});
  at::Tensor hp_k = h_prev.permute({1, 0, 2, 3}).reshape({K, T * B, H});
  at::Tensor d_w_hh = at::bmm(dg_k.transpose(1, 2), hp_k);
  return {d_gates, d_w_hh, dh, dc, d_init_h, d_init_c};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "the recurrence: (xg, w_hh, h0, c0, keep, init_h, init_c)");
  m.def("backward", &backward, "its gradients: (grad_hs, grad_cT, w_hh, keep, activations)");
}
