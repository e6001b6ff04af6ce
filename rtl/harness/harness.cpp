// Streaming harness: drives the Verilator model of the DPU over whole arrays, built as a shared
// library (verilator --exe harness.cpp -CFLAGS -fPIC -LDFLAGS -shared) and called via ctypes.
//
// The field map comes from dpu_cfg.h, written by rtl/verilated.py from the same layouts the RTL
// was generated from (rtl.generate.port_map). Verilator escapes "__" in port names as "___05F".
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "Vdpu.h"
#include "verilated.h"
#include "dpu_cfg.h"

namespace {

constexpr int IN_WORDS = (DPU_LANES * DPU_IN_LANE_W + 31) / 32;
constexpr int OUT_WORDS = (DPU_LANES * DPU_OUT_LANE_W + 31) / 32;

// OR `width` (< 32) low bits of v (already masked) into a little-endian word buffer at bit `lsb`.
inline void put(uint32_t* w, int lsb, int width, uint32_t v) {
    const int wi = lsb >> 5, b = lsb & 31;
    w[wi] |= v << b;
    if (b + width > 32) w[wi + 1] |= v >> (32 - b);
}

inline uint32_t get(const uint32_t* w, int nwords, int lsb, int width) {
    const int wi = lsb >> 5, b = lsb & 31;
    uint64_t x = w[wi];
    if (b + width > 32 && wi + 1 < nwords) x |= uint64_t(w[wi + 1]) << 32;
    return uint32_t(x >> b) & ((uint32_t(1) << width) - 1u);
}

inline int32_t sext(uint32_t v, int width) {
    const uint32_t m = uint32_t(1) << (width - 1);
    return int32_t((v ^ m) - m);
}

// Port <-> word buffer, for both wide (VlWide) and narrow (<= 64-bit) Verilator ports.
template <std::size_t N>
inline void store(VlWide<N>& port, const uint32_t* buf) {
    for (std::size_t i = 0; i < N; ++i) port[i] = buf[i];
}
template <typename T, typename std::enable_if<std::is_integral<T>::value, int>::type = 0>
inline void store(T& port, const uint32_t* buf) {
    uint64_t v = buf[0];
    if (IN_WORDS > 1) v |= uint64_t(buf[1]) << 32;
    port = T(v);
}
template <std::size_t N>
inline void load(const VlWide<N>& port, uint32_t* buf) {
    for (std::size_t i = 0; i < N; ++i) buf[i] = port[i];
}
template <typename T, typename std::enable_if<std::is_integral<T>::value, int>::type = 0>
inline void load(const T& port, uint32_t* buf) {
    const uint64_t v = uint64_t(port);
    buf[0] = uint32_t(v);
    if (OUT_WORDS > 1) buf[1] = uint32_t(v >> 32);
}

struct Harness {
    VerilatedContext ctx;
    Vdpu* top;
    uint64_t cycles = 0;
    Harness() {
        top = new Vdpu(&ctx);
        top->clk = 0;
        top->rst = 1;
        top->i___05Fvalid = 0;
        top->o___05Fready = 1;
        top->eval();
        for (int k = 0; k < 2; ++k) tick();
        top->rst = 0;
        top->eval();
    }
    ~Harness() {
        top->final();
        delete top;
    }
    inline void tick() {
        top->clk = 1;
        top->eval();
        top->clk = 0;
        top->eval();
        ++cycles;
    }
};

constexpr uint32_t mask(int w) { return w >= 32 ? 0xffffffffu : ((uint32_t(1) << w) - 1u); }

}  // namespace

extern "C" {

int dpu_lanes() { return DPU_LANES; }
int dpu_latency() { return DPU_LATENCY; }
const char* dpu_key() { return DPU_KEY; }

void* dpu_new() { return new Harness(); }
void dpu_free(void* h) { delete static_cast<Harness*>(h); }
uint64_t dpu_cycles(void* h) { return static_cast<Harness*>(h)->cycles; }

// n lane-updates; chi/inc/rand int32 in, chi_out/pulses int32 and neg uint8 out. rand may be NULL
// when the unit has no rand field. Returns the number of lane-updates produced (== n), or -1 if
// the unit stalled.
int64_t dpu_run(void* hp, int64_t n, const int32_t* chi, const int32_t* inc, const int32_t* rand,
                int32_t* chi_out, int32_t* pulses, uint8_t* neg) {
    Harness& h = *static_cast<Harness*>(hp);
    Vdpu* top = h.top;
    const int64_t beats = (n + DPU_LANES - 1) / DPU_LANES;
    uint32_t ibuf[IN_WORDS + 1];
    uint32_t obuf[OUT_WORDS + 1];
    int64_t in_beat = 0, out_beat = 0, idle = 0;
    top->o___05Fready = 1;
    while (out_beat < beats) {
        // present the next input beat (inputs settle while clk is low)
        if (in_beat < beats) {
            std::memset(ibuf, 0, sizeof(ibuf));
            const int64_t base = in_beat * DPU_LANES;
            const int lanes = int(n - base < DPU_LANES ? n - base : DPU_LANES);
            for (int l = 0; l < lanes; ++l) {
                const int off = l * DPU_IN_LANE_W;
                put(ibuf, off + DPU_IN_CHI_OFF, DPU_IN_CHI_W, uint32_t(chi[base + l]) & mask(DPU_IN_CHI_W));
                put(ibuf, off + DPU_IN_INC_OFF, DPU_IN_INC_W, uint32_t(inc[base + l]) & mask(DPU_IN_INC_W));
#if DPU_HAS_RAND
                if (rand) put(ibuf, off + DPU_IN_RAND_OFF, DPU_IN_RAND_W, uint32_t(rand[base + l]) & mask(DPU_IN_RAND_W));
#endif
            }
            store(top->i___05Fpayload, ibuf);
            top->i___05Fvalid = 1;
        } else {
            top->i___05Fvalid = 0;
        }
        const bool in_fire = top->i___05Fvalid && top->i___05Fready;
        top->clk = 1;
        top->eval();
        if (in_fire) ++in_beat;
        // registered outputs after the edge: collect a completed beat (o.ready is held high)
        if (top->o___05Fvalid) {
            load(top->o___05Fpayload, obuf);
            const int64_t base = out_beat * DPU_LANES;
            const int lanes = int(n - base < DPU_LANES ? n - base : DPU_LANES);
            for (int l = 0; l < lanes; ++l) {
                const int off = l * DPU_OUT_LANE_W;
                chi_out[base + l] = sext(get(obuf, OUT_WORDS, off + DPU_OUT_CHI_OFF, DPU_OUT_CHI_W), DPU_OUT_CHI_W);
                pulses[base + l] = int32_t(get(obuf, OUT_WORDS, off + DPU_OUT_P_OFF, DPU_OUT_P_W));
                neg[base + l] = uint8_t(get(obuf, OUT_WORDS, off + DPU_OUT_NEG_OFF, 1));
            }
            ++out_beat;
            idle = 0;
        } else if (++idle > 4 * DPU_LATENCY + 16) {
            return -1;
        }
        top->clk = 0;
        top->eval();
        ++h.cycles;
    }
    // drain: nothing left in flight (every accepted beat has come out)
    top->i___05Fvalid = 0;
    return n;
}

}  // extern "C"
