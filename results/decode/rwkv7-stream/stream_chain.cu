// An experiment, not part of the package (results/decode/rwkv7-stream/README.md): can one
// persistent kernel stream a decode step's weights at the copy rate *through* the step's
// dependencies?
//
// A chain of dependent matrix-vector products y_p = W_p x_p (x_p = the first K_p values of
// y_{p-1}), bf16, batch 1, in ONE launch: one block an SM. In each block a producer (one
// thread with bulk copies, cp.async.bulk, completing on an mbarrier; or a warp of 16-byte
// cp.async, arriving on it with cp.async.mbarrier.arrive) streams the block's weight tiles
// (whole rows, or pieces of one, contiguous in row-major W) into a ring of S shared-memory
// slots, phase after phase, never waiting for activations: weights do not depend on them.
// NW consumer warps wait for phase p's input (a global counter of blocks done with phase
// p - 1), copy it into shared memory, and take the phase's tiles in turn (warp w: tiles w,
// w + NW, ...; or groups of warps a tile), one row at a time, the row's dot product reduced
// by shuffles. So while the consumers wait at a dependency, the producer keeps the block's S
// slots in flight: the question is whether S slots (up to ~200 KB an SM) cover the wait.
//
// Tiles of a phase go to blocks round-robin, starting where the phase before stopped, so each
// block's share over the step is even. S must be a multiple of NW (of ng with groups): then
// the tile a slot held before (S tiles earlier) was a tile of the same warp (group) or of an
// earlier phase, which keeps every mbarrier wait within one phase of the barrier (what
// try_wait.parity needs).
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <cuda_bf16.h>
#include <cstdint>

namespace {

// Slots are SLOTB bytes (a template parameter: 20480 = 4 rows of 2560 or 1 row of 10240 bf16).
// A warp's unit of work is max(1, SLOTB / 2K) whole rows in one slot, or - rows wider than a
// slot - one row over 2K / SLOTB consecutive slots, released one by one as the warp is done
// with each.
constexpr int KMAX = 10240;

// rows == 0: not a product but a stand-in for other work (a norm, the per-head kernel): the
// first (uintptr_t)x blocks spend K ns, then every block signals it done.
struct Phase {
  const __nv_bfloat16* w;
  const __nv_bfloat16* x;
  __nv_bfloat16* y;
  int rows, K;
};

__device__ __forceinline__ uint32_t saddr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mbar_init(uint64_t* b, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(saddr(b)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* b, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(saddr(b)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* b) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(saddr(b)) : "memory");
}
__device__ __forceinline__ bool mbar_test(uint64_t* b, uint32_t parity) {
  uint32_t ok;
  asm volatile(
      "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(ok)
      : "r"(saddr(b)), "r"(parity)
      : "memory");
  return ok != 0;
}
__device__ __forceinline__ void mbar_wait(uint64_t* b, uint32_t parity) {
  while (!mbar_test(b, parity)) {
  }
}
__device__ __forceinline__ void bulk_load(void* dst, const void* src, uint32_t bytes, uint64_t* bar, uint64_t policy) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::"r"(
          saddr(dst)),
      "l"(src), "r"(bytes), "r"(saddr(bar)), "l"(policy)
      : "memory");
}
__device__ __forceinline__ uint64_t globaltimer() {
  uint64_t t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ int ld_acquire(const int* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
template <int NW>
__device__ __forceinline__ void consumers_sync() {
  asm volatile("bar.sync 1, %0;" ::"n"(NW * 32) : "memory");
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}
__device__ __forceinline__ float dot8(const uint4& a, const uint4& b, float acc) {
  const __nv_bfloat162* pa = reinterpret_cast<const __nv_bfloat162*>(&a);
  const __nv_bfloat162* pb = reinterpret_cast<const __nv_bfloat162*>(&b);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 fa = __bfloat1622float2(pa[i]), fb = __bfloat1622float2(pb[i]);
    acc = fmaf(fa.x, fb.x, acc);
    acc = fmaf(fa.y, fb.y, acc);
  }
  return acc;
}
enum Mode { TMA = 0, LDGSTS = 1, NONE = 2 };
__device__ __forceinline__ float dot8f(const uint4& a, const float4& b0, const float4& b1, float acc) {
  const __nv_bfloat162* pa = reinterpret_cast<const __nv_bfloat162*>(&a);
  const float2 f0 = __bfloat1622float2(pa[0]), f1 = __bfloat1622float2(pa[1]);
  const float2 f2 = __bfloat1622float2(pa[2]), f3 = __bfloat1622float2(pa[3]);
  acc = fmaf(f0.x, b0.x, acc);
  acc = fmaf(f0.y, b0.y, acc);
  acc = fmaf(f1.x, b0.z, acc);
  acc = fmaf(f1.y, b0.w, acc);
  acc = fmaf(f2.x, b1.x, acc);
  acc = fmaf(f2.y, b1.y, acc);
  acc = fmaf(f3.x, b1.z, acc);
  return fmaf(f3.y, b1.w, acc);
}
__device__ __forceinline__ int rows_per_unit(int K, int slotb) { return max(1, slotb / (2 * K)); }
__device__ __forceinline__ int slots_per_unit(int K, int slotb) { return max(1, 2 * K / slotb); }
// first tile of phase p for block b (tiles go round-robin from where the last phase stopped)
__device__ __forceinline__ int first_tile(int b, int base, int G) { return ((b - base) % G + G) % G; }

// Walks a block's tiles in the producer's order (for the prefetch window).
struct Cursor {
  const Phase* phases;
  int P, b, G, slotb, p = -1, j = 0, base = 0, T = 0, K = 0;
  const __nv_bfloat16* w = nullptr;
  __device__ Cursor(const Phase* ph, int P_, int b_, int G_, int slotb_)
      : phases(ph), P(P_), b(b_), G(G_), slotb(slotb_) {
    next();
  }
  __device__ void next() {  // to the next tile; p == P past the last
    if (p >= 0) j += G;
    while (p < P && (p < 0 || j >= T)) {
      if (p >= 0) base += T;
      if (++p == P) break;
      const Phase ph = phases[p];
      T = ph.rows > 0 ? ph.rows / rows_per_unit(ph.K, slotb) : 0;
      K = ph.K;
      w = ph.w;
      j = first_tile(b, base, G);
    }
  }
};

// wait: 1 = consumers wait for the phase before (the real chain); 0 = they do not (how fast
// the same kernel streams without dependencies; the results are then garbage).
// VF32: the phase's input vector is kept in shared memory as fp32 (widened once a phase, not
// once a row), at the cost of 20 KB more shared memory, so one ring slot fewer.
// pf > 0: the producer also asks for the tile pf places further in the block's sequence to be
// prefetched into L2 (cp.async.bulk.prefetch.L2) as it fills a slot: a window beyond the ring.
template <int NW, int S, bool VF32, int SLOTB>
__global__ void __launch_bounds__((NW + 1) * 32, 1)
    chain_kernel(const Phase* __restrict__ phases, int P, int* done, int wait, int evict_first, int mode, int split,
                 int pf, int vreg, int ng) {
  extern __shared__ __align__(128) uint8_t smem[];
  __shared__ float red[NW][2][NW][4];  // [group][tile parity][warp in group][row]
  uint8_t* ring = smem;
  uint8_t* vec = smem + S * SLOTB;
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + S * SLOTB + KMAX * (VF32 ? 4 : 2));
  uint64_t* empty = full + S;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, G = gridDim.x, b = blockIdx.x;
  if (threadIdx.x == 0) {
    for (int s = 0; s < S; ++s) {
      mbar_init(&full[s], mode == LDGSTS ? 32 : 1);
      mbar_init(&empty[s], 1);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  if (warp == NW) {  // the producer
    if (mode == LDGSTS || lane == 0) {
      uint64_t policy;
      if (evict_first)
        asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
      else
        asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(policy));
      Cursor ahead{phases, P, b, G, SLOTB};
      for (int i = 0; i < pf; ++i) ahead.next();
      int n = 0, base = 0;
      for (int p = 0; p < P; ++p) {
        const Phase ph = phases[p];
        const int rpu = rows_per_unit(ph.K, SLOTB), spu = slots_per_unit(ph.K, SLOTB);
        const int T = ph.rows > 0 ? ph.rows / rpu : 0;
        const uint32_t bytes = (uint32_t)rpu * ph.K * 2 / spu;  // a slot's
        for (int j = first_tile(b, base, G); j < T; j += G)
        for (int i = 0; i < spu; ++i, ++n) {
          const int s = n % S, k = n / S;
          if (pf > 0 && i == 0 && lane == 0 && ahead.p < P) {
            const int r = rows_per_unit(ahead.K, SLOTB);
            asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(ahead.w + (size_t)ahead.j * r * ahead.K),
                         "r"(r * ahead.K * 2)
                         : "memory");
            ahead.next();
          }
          if (k > 0) mbar_wait(&empty[s], (k - 1) & 1);
          uint8_t* dst = ring + (size_t)s * SLOTB;
          const uint8_t* src = reinterpret_cast<const uint8_t*>(ph.w + (size_t)j * rpu * ph.K) + (size_t)i * bytes;
          if (mode == TMA) {
            mbar_expect_tx(&full[s], bytes);
            const uint32_t piece = bytes / split;
            for (int i = 0; i < split; ++i) bulk_load(dst + i * piece, src + i * piece, piece, &full[s], policy);
          } else if (mode == LDGSTS) {
            // Without the evict-first hint the copies carry no cache hint at all. With an
            // evict-normal hint, the SLOTB = 5120 instances faulted ("illegal instruction" at a
            // hinted LDGSTS, compute-sanitizer, calls 8-10 in the README); the 10 and 20 KB
            // instances, with the same instructions as far as the SASS shows, did not. Not
            // diagnosed further: without the hint every instance runs and passes its check.
            if (evict_first)
              for (uint32_t o = lane * 16; o < bytes; o += 32 * 16)
                asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;" ::"r"(saddr(dst + o)),
                             "l"(src + o), "l"(policy)
                             : "memory");
            else
              for (uint32_t o = lane * 16; o < bytes; o += 32 * 16)
                asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(saddr(dst + o)), "l"(src + o) : "memory");
            asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(saddr(&full[s])) : "memory");
          } else {
            mbar_arrive(&full[s]);  // NONE: no bytes moved (the consumers' own speed)
          }
        }
        base += T;
      }
    }
    return;
  }

  int n = 0, base = 0;
  for (int p = 0; p < P; ++p) {
    const Phase ph = phases[p];
    const int rpt = rows_per_unit(ph.K, SLOTB), spu = slots_per_unit(ph.K, SLOTB);
    const int T = ph.rows > 0 ? ph.rows / rpt : 0, j0 = first_tile(b, base, G);
    const int cnt = j0 < T ? (T - 1 - j0) / G + 1 : 0;
    if (p > 0 && wait && threadIdx.x == 0)
      while (ld_acquire(&done[p - 1]) < G) {
      }
    consumers_sync<NW>();
    if (ph.rows == 0) {  // a stand-in for work that is not a product: the first x blocks busy for K ns
      if (threadIdx.x == 0 && b < (int)reinterpret_cast<uintptr_t>(ph.x)) {
        const uint64_t t0 = globaltimer();
        while (globaltimer() - t0 < (uint64_t)ph.K) {
        }
      }
      consumers_sync<NW>();
      if (threadIdx.x == 0) {
        __threadfence();
        atomicAdd(&done[p], 1);
      }
      continue;
    }
    {  // every load issued before the first store: one L2 round trip, not K / (NW * 256)
      constexpr int VPT = (KMAX / 8 + NW * 32 - 1) / (NW * 32);
      uint4 t[VPT];
#pragma unroll
      for (int i = 0; i < VPT; ++i) {
        const int e = (threadIdx.x + i * NW * 32) * 8;
        if (e < ph.K) t[i] = __ldcg(reinterpret_cast<const uint4*>(ph.x + e));
      }
#pragma unroll
      for (int i = 0; i < VPT; ++i) {
        const int e = (threadIdx.x + i * NW * 32) * 8;
        if (e >= ph.K) continue;
        if (VF32) {
          float f[8];
          const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&t[i]);
#pragma unroll
          for (int u = 0; u < 4; ++u) {
            const float2 g = __bfloat1622float2(h[u]);
            f[2 * u] = g.x;
            f[2 * u + 1] = g.y;
          }
          reinterpret_cast<float4*>(vec)[e / 4] = make_float4(f[0], f[1], f[2], f[3]);
          reinterpret_cast<float4*>(vec)[e / 4 + 1] = make_float4(f[4], f[5], f[6], f[7]);
        } else {
          reinterpret_cast<uint4*>(vec)[e / 8] = t[i];
        }
      }
    }
    consumers_sync<NW>();
    const uint4* v4 = reinterpret_cast<const uint4*>(vec);
    const float4* vf = reinterpret_cast<const float4*>(vec);
    const int cpr = ph.K / 8;  // 16-byte chunks a row
    // vreg (2560 columns): a lane's 10 chunks of the vector are the same in every row of the
    // phase, so they are read from shared memory once, into registers, and not once a row
    const bool in_regs = vreg && !VF32 && cpr == 320;
    uint4 vr[10];
    if (in_regs) {
#pragma unroll
      for (int u = 0; u < 10; ++u) vr[u] = v4[lane + 32 * u];
    }
    if (ng > 0) {
      // ng groups of NW / ng warps; a group's warps take one tile together (thread i of the
      // group: chunks i, i + GT, ... of each row), so a slot is busy for 1 / (NW / ng) of the
      // time one warp would take; partial sums meet in shared memory behind the group's barrier.
      const int GW = NW / ng, g = warp / GW, GT = GW * 32, gt = threadIdx.x - g * GT;
      for (int t = g; t < cnt; t += ng) {
        const int nn = n + t, s = nn % S, k = nn / S, par = (t / ng) & 1;
        mbar_wait(&full[s], k & 1);
        const uint4* w4 = reinterpret_cast<const uint4*>(ring + (size_t)s * SLOTB);
        float part[4];
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          float a = 0.f;
          if (r < rpt)
            for (int c = gt; c < cpr; c += GT) a = dot8(w4[r * cpr + c], v4[c], a);
          part[r] = warp_sum(a);
        }
        if (lane == 0)
#pragma unroll
          for (int r = 0; r < 4; ++r) red[g][par][warp - g * GW][r] = part[r];
        asm volatile("bar.sync %0, %1;" ::"r"(2 + g), "r"(GT) : "memory");
        if (gt == 0) mbar_arrive(&empty[s]);
        if (gt < rpt) {
          float y = 0.f;
          for (int w = 0; w < GW; ++w) y += red[g][par][w][gt];
          ph.y[(j0 + t * G) * rpt + gt] = __float2bfloat16(y);
        }
      }
    } else
    for (int t = warp; t < cnt; t += NW) {  // a warp a unit: rpt rows, over spu slots
      float acc0[4] = {0.f, 0.f, 0.f, 0.f}, acc1[4] = {0.f, 0.f, 0.f, 0.f};
      const int cps = cpr / spu;  // 16-byte chunks of a row in one slot: 320, 640 or 1280
      for (int i = 0; i < spu; ++i) {
        const int nn = n + t * spu + i, s = nn % S, k = nn / S;
        mbar_wait(&full[s], k & 1);
        const uint4* w4 = reinterpret_cast<const uint4*>(ring + (size_t)s * SLOTB);
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          if (r >= rpt) break;
          if (in_regs) {
#pragma unroll
            for (int u = 0; u < 10; u += 2) {
              acc0[r] = dot8(w4[r * 320 + lane + 32 * u], vr[u], acc0[r]);
              acc1[r] = dot8(w4[r * 320 + lane + 32 * u + 32], vr[u + 1], acc1[r]);
            }
          } else
          for (int c0 = lane; c0 < cps; c0 += 320) {  // cps / 32 is a multiple of 10
#pragma unroll
            for (int u = 0; u < 10; u += 2) {
              const int c = c0 + 32 * u, cv = i * cps + c;  // the weights' chunk in the slot, the vector's
              if (VF32) {
                acc0[r] = dot8f(w4[r * cps + c], vf[2 * cv], vf[2 * cv + 1], acc0[r]);
                acc1[r] = dot8f(w4[r * cps + c + 32], vf[2 * cv + 64], vf[2 * cv + 65], acc1[r]);
              } else {
                acc0[r] = dot8(w4[r * cps + c], v4[cv], acc0[r]);
                acc1[r] = dot8(w4[r * cps + c + 32], v4[cv + 32], acc1[r]);
              }
            }
          }
        }
        __syncwarp();
        if (lane == 0) mbar_arrive(&empty[s]);  // the slot is free as soon as this warp is done with it
      }
      const int row0 = (j0 + t * G) * rpt;
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        if (r >= rpt) break;
        const float acc = warp_sum(acc0[r] + acc1[r]);
        if (lane == 0) ph.y[row0 + r] = __float2bfloat16(acc);
      }
    }
    n += cnt * spu;
    base += T;
    consumers_sync<NW>();
    if (threadIdx.x == 0) {
      __threadfence();
      atomicAdd(&done[p], 1);
    }
  }
}

template <int NW, int S, bool VF32, int SLOTB = 20480>
void launch(const Phase* phases, int P, int* done, int wait, int evict_first, int mode, int split, int pf, int vreg,
            int ng, cudaStream_t st) {
  static_assert(S % (NW * (2 * KMAX / SLOTB > 1 ? 2 * KMAX / SLOTB : 1)) == 0,
                "a slot's earlier tile must be its warp's (or of an earlier phase) for every unit width");
  const size_t smem = (size_t)S * SLOTB + KMAX * (VF32 ? 4 : 2) + 2 * S * sizeof(uint64_t);
  auto k = chain_kernel<NW, S, VF32, SLOTB>;
  TORCH_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) == cudaSuccess,
              "shared memory opt-in");
  int dev = 0, sms = 0, per_sm = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k, (NW + 1) * 32, smem);
  TORCH_CHECK(per_sm >= 1, "chain kernel does not fit an SM");
  k<<<sms, (NW + 1) * 32, smem, st>>>(phases, P, done, wait, evict_first, mode, split, pf, vreg, ng);
  TORCH_CHECK(cudaGetLastError() == cudaSuccess, "chain kernel launch");
}

}  // namespace

// phases: int64 tensor [P, 4] on the GPU: w, x, y pointers, rows + (K << 32). done: int32 [P], zeroed.
// slot_bytes: 20480 (every form), or 10240 / 5120 (more, smaller slots; a warp's units then
// release their slots one by one - only the warp-a-unit consumers).
void chain(at::Tensor phases, at::Tensor done, int64_t nw, int64_t s, bool wait, bool evict_first, int64_t mode,
           int64_t split, int64_t pf, bool vf32, bool vreg, int64_t ng, int64_t slot_bytes) {
  TORCH_CHECK(ng == 0 || (nw % ng == 0 && s % ng == 0), "ng divides the warps and the slots");
  TORCH_CHECK(mode >= 0 && mode <= 2 && split >= 1 && slot_bytes % (split * 16) == 0,
              "mode 0-2; split: 16-byte pieces of every slot");
  TORCH_CHECK(slot_bytes == 20480 || (ng == 0 && !vf32 && !evict_first),
              "small slots: warp-a-unit consumers, bf16 vector, no cache hint (the hint faulted at 5 KB)");
  TORCH_CHECK(phases.is_cuda() && phases.dim() == 2 && phases.size(1) == 4 && phases.scalar_type() == at::kLong);
  static_assert(sizeof(Phase) == 32, "Phase is four 8-byte words, rows and K packed in the last");
  const Phase* ph = reinterpret_cast<const Phase*>(phases.data_ptr());
  const int P = (int)phases.size(0);
  cudaStream_t st = at::cuda::getCurrentCUDAStream();
  int* d = done.data_ptr<int>();
#define CHAIN_ARGS ph, P, d, wait, evict_first, (int)mode, (int)split, (int)pf, (int)vreg, (int)ng, st
#define CHAIN_FORM(NW, S, VF32, SLOTB) \
  if (nw == NW && s == S && vf32 == VF32 && slot_bytes == SLOTB) return launch<NW, S, VF32, SLOTB>(CHAIN_ARGS);
  CHAIN_FORM(9, 9, true, 20480)
  CHAIN_FORM(3, 9, true, 20480)
  CHAIN_FORM(8, 8, false, 20480)
  CHAIN_FORM(5, 10, false, 20480)
  CHAIN_FORM(10, 10, false, 20480)
  CHAIN_FORM(4, 4, false, 20480)
  CHAIN_FORM(2, 2, false, 20480)
  CHAIN_FORM(10, 20, false, 10240)
  CHAIN_FORM(5, 20, false, 10240)
  CHAIN_FORM(10, 40, false, 5120)
  CHAIN_FORM(8, 32, false, 5120)
  CHAIN_FORM(5, 40, false, 5120)
  CHAIN_FORM(5, 20, false, 5120)
#undef CHAIN_FORM
#undef CHAIN_ARGS
  TORCH_CHECK(false, "no instance for nw=", nw, " s=", s, " vf32=", vf32, " slot_bytes=", slot_bytes);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("chain", &chain); }
