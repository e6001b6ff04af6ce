// Harness of the whole unit (rtl.tile.TileUnit): drives the Verilator model through its real
// ports (x / d streams, event stream, host chi port, seed, status), one mini-batch per call,
// built as a shared library and called via ctypes (rtl/tile_verilated.py).
//
// Field offsets and widths come from tile_cfg.h, written from the same layouts the RTL was
// generated from. Verilator escapes "__" in port names as "___05F". Speed (docs/dpu.md, "Figures
// of the whole unit"): one eval() per clock in the batch loop, wide ports a word at a time.
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "Vtile.h"
#include "Vtile___024root.h"
#include "verilated.h"
#include "tile_cfg.h"

namespace {

// Verilator 5 detects a rising edge by comparing clk with its value at the previous eval()
// (a member of the root class). Where that member exists (checked at compile time), a clock
// cycle of the batch loop is ONE eval: the cycle's inputs and clk = 1 with "previous clk" set to 0
// (the unit has no negedge logic, so the falling edge needs no evaluation of its own). Otherwise
// two evals (clk low with the inputs, then clk high).
// TILE_FORCE_TWO_EVALS (a -D flag) takes the two-eval path regardless (tests/test_dpu_tile_rtl.py).
template <typename R, typename = void>
struct HasPrevClk : std::false_type {};
#ifndef TILE_FORCE_TWO_EVALS
template <typename R>
struct HasPrevClk<R, decltype((void)std::declval<R&>().__Vtrigprevexpr___TOP__clk__0, void())>
    : std::true_type {};
#endif

// bit-field access for narrow (integral) and wide (VlWide) ports alike
template <std::size_t N>
inline void put(VlWide<N>& p, int off, int w, uint64_t v) {
    // word-level: at most three 32-bit words hold [off, off + w), w <= 64
    for (int b = off; b < off + w;) {
        const int wi = b >> 5, sh = b & 31, n = (32 - sh < off + w - b) ? 32 - sh : off + w - b;
        const uint32_t m = ((n == 32) ? ~0u : ((1u << n) - 1u)) << sh;
        p[wi] = (p[wi] & ~m) | (uint32_t(v >> (b - off)) << sh & m);
        b += n;
    }
}
template <typename T, typename std::enable_if<std::is_integral<T>::value, int>::type = 0>
inline void put(T& p, int off, int w, uint64_t v) {
    const uint64_t mask = (w >= 64) ? ~uint64_t(0) : ((uint64_t(1) << w) - 1);
    p = T((uint64_t(p) & ~(mask << off)) | ((v & mask) << off));
}
template <std::size_t N>
inline uint64_t get(const VlWide<N>& p, int off, int w) {
    // word-level: up to 64 bits from the (at most three) 32-bit words holding [off, off + w)
    const int wi = off >> 5, sh = off & 31;
    uint64_t v = uint64_t(p[wi]) >> sh;
    if (wi + 1 < int(N)) v |= uint64_t(p[wi + 1]) << (32 - sh);
    if (sh && w > 64 - sh && wi + 2 < int(N)) v |= uint64_t(p[wi + 2]) << (64 - sh);
    return (w >= 64) ? v : (v & ((uint64_t(1) << w) - 1));
}
template <typename T, typename std::enable_if<std::is_integral<T>::value, int>::type = 0>
inline uint64_t get(const T& p, int off, int w) {
    const uint64_t mask = (w >= 64) ? ~uint64_t(0) : ((uint64_t(1) << w) - 1);
    return (uint64_t(p) >> off) & mask;
}
inline int64_t sext(uint64_t v, int w) {
    const uint64_t m = uint64_t(1) << (w - 1);
    return int64_t((v ^ m) - m);
}

struct Harness {
    VerilatedContext ctx;
    Vtile* top;
    uint64_t cycles = 0;
    Harness() {
        top = new Vtile(&ctx);
        top->clk = 0;
        top->rst = 1;
        top->x___05Fvalid = 0;
        top->d___05Fvalid = 0;
        top->chi_wr___05Fvalid = 0;
        top->chi_rd_addr___05Fvalid = 0;
        top->chi_rd___05Fready = 0;
        top->events___05Fready = 1;
        top->seed_load = 0;
        top->clear = 0;
        top->eval();
        for (int k = 0; k < 3; ++k) tick();
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
    // The chi port loops take two evaluations per clock (tick() takes three): set the inputs of
    // the cycle and evaluate with clk low (this also completes the previous falling edge: the
    // unit has no negedge logic), read the outputs (some depend on this cycle's inputs), rise().
    // The batch loop takes one: cycle().
    inline void low() {
        top->clk = 0;
        top->eval();
    }
    inline void rise() {
        top->clk = 1;
        top->eval();
        ++cycles;
    }
    // one clock cycle with the inputs already set (see HasPrevClk); the outputs read before it
    // must depend on the unit's state only (registered), as the batch loop's are
    template <typename R = Vtile___024root>
    inline void cycle() {
        if constexpr (HasPrevClk<R>::value) {
            static_cast<R*>(top->rootp)->__Vtrigprevexpr___TOP__clk__0 = 0;   // dependent: discarded if absent
            top->clk = 1;
            top->eval();
            ++cycles;
        } else {
            low();
            rise();
        }
    }
    uint64_t status(int off, int w) { return get(top->status, off, w); }
    bool idle() { return !status(ST_BUSY_OFF, 1) && !status(ST_PENDING_OFF, 1); }
};

}  // namespace

extern "C" {

void* tile_new() { return new Harness(); }
void tile_free(void* h) { delete static_cast<Harness*>(h); }
uint64_t tile_cycles(void* h) { return static_cast<Harness*>(h)->cycles; }
const char* tile_key() { return TILE_KEY; }
// evaluations per clock cycle in the batch loop (1: the "previous clk" member was found)
int tile_evals_per_cycle() { return HasPrevClk<Vtile___024root>::value ? 1 : 2; }

void tile_seed(void* hp, uint32_t seed) {
    Harness& h = *static_cast<Harness*>(hp);
    h.top->seed = seed;
    h.top->seed_load = 1;
    h.top->eval();
    h.tick();
    h.top->seed_load = 0;
    h.top->eval();
}

void tile_clear(void* hp) {
    Harness& h = *static_cast<Harness*>(hp);
    h.top->clear = 1;
    h.top->eval();
    h.tick();
    h.top->clear = 0;
    h.top->eval();
}

// counters: events, pulses, pmax_hits, inc_sat, batches
void tile_status(void* hp, uint32_t* out) {
    Harness& h = *static_cast<Harness*>(hp);
    out[0] = uint32_t(h.status(ST_EVENTS_OFF, 32));
    out[1] = uint32_t(h.status(ST_PULSES_OFF, 32));
    out[2] = uint32_t(h.status(ST_PMAX_OFF, 32));
    out[3] = uint32_t(h.status(ST_INCSAT_OFF, 32));
    out[4] = uint32_t(h.status(ST_BATCHES_OFF, 32));
}

// write the whole chi (rows * cols, raster order) through the host port; returns cycles used
int64_t tile_load_chi(void* hp, const int32_t* chi) {
    Harness& h = *static_cast<Harness*>(hp);
    const uint64_t c0 = h.cycles;
    for (int a = 0; a < T_GROUPS;) {
        h.top->chi_wr___05Fvalid = 1;
        put(h.top->chi_wr___05Fpayload, WR_ADDR_OFF, WR_ADDR_W, uint64_t(a));
        for (int l = 0; l < T_LANES; ++l)
            put(h.top->chi_wr___05Fpayload, WR_DATA_OFF + l * T_CHI_W, T_CHI_W,
                uint64_t(int64_t(chi[a * T_LANES + l])));
        h.low();
        const bool take = h.top->chi_wr___05Fready;
        h.rise();
        if (take) ++a;
        if (h.cycles - c0 > uint64_t(T_GROUPS) * 4 + 1000) { h.low(); return -1; }
    }
    h.top->chi_wr___05Fvalid = 0;
    h.low();
    return int64_t(h.cycles - c0);
}

int64_t tile_dump_chi(void* hp, int32_t* chi) {
    Harness& h = *static_cast<Harness*>(hp);
    const uint64_t c0 = h.cycles;
    int req = 0, got = 0;
    h.top->chi_rd___05Fready = 1;
    while (got < T_GROUPS) {
        h.top->chi_rd_addr___05Fvalid = req < T_GROUPS;
        h.top->chi_rd_addr___05Fpayload = req;
        h.low();
        if (h.top->chi_rd___05Fvalid) {
            for (int l = 0; l < T_LANES; ++l)
                chi[got * T_LANES + l] = int32_t(sext(get(h.top->chi_rd___05Fpayload, l * T_CHI_W, T_CHI_W), T_CHI_W));
            ++got;
        }
        const bool take = req < T_GROUPS && h.top->chi_rd_addr___05Fready;
        h.rise();
        if (take) ++req;
        if (h.cycles - c0 > uint64_t(T_GROUPS) * 4 + 1000) { h.low(); return -1; }
    }
    h.top->chi_rd_addr___05Fvalid = 0;
    h.top->chi_rd___05Fready = 0;
    h.low();
    return int64_t(h.cycles - c0);
}

// One mini-batch: x (batch x cols codes), d (batch x rows codes), scale mantissa m. Events go to
// ev as records of rtl.golden.EVENT_DTYPE (EVR_* in tile_cfg.h: int32 row, col, count, uint8 neg,
// unaligned), at most max_ev; returns the event count (-1: stalled, -2: more events than max_ev).
// Cycles from the first beat to idle go to *cycles_out.
int64_t tile_batch(void* hp, const int32_t* x, const int32_t* d, uint32_t m, uint8_t* ev,
                   int64_t max_ev, uint64_t* cycles_out) {
    Harness& h = *static_cast<Harness*>(hp);
    const int nx = T_BATCH * T_COLS / T_LANES, nd = T_BATCH * T_ROWS / T_LANES;
    const uint64_t b0 = h.status(ST_BATCHES_OFF, 32);
    const uint64_t c0 = h.cycles;
    int xi = 0, di = 0;
    int64_t n = 0;
    h.top->scale = m;
    h.top->events___05Fready = 1;
    const uint64_t limit = uint64_t(T_GROUPS) * (T_BATCH / T_TAPS + T_LANES) * 4 + 100000;
    // Per cycle: read the handshakes and the event output (registered: the values after the last
    // edge), set the inputs of the cycle, one clock cycle.
    for (;;) {
        const bool tx = xi < nx && h.top->x___05Fready;
        const bool td = di < nd && h.top->d___05Fready;
        if (h.top->events___05Fvalid) {
            if (n >= max_ev) { h.low(); return -2; }
            uint8_t* r = ev + n * EVR_SIZE;
            const int32_t row = int32_t(get(h.top->events___05Fpayload, EV_ROW_OFF, EV_ROW_W));
            const int32_t col = int32_t(get(h.top->events___05Fpayload, EV_COL_OFF, EV_COL_W));
            const int32_t cnt = int32_t(get(h.top->events___05Fpayload, EV_COUNT_OFF, EV_COUNT_W));
            std::memcpy(r + EVR_ROW, &row, 4);
            std::memcpy(r + EVR_COL, &col, 4);
            std::memcpy(r + EVR_COUNT, &cnt, 4);
            r[EVR_NEG] = uint8_t(get(h.top->events___05Fpayload, EV_NEG_OFF, 1));
            ++n;
        }
        h.top->x___05Fvalid = xi < nx;
        h.top->d___05Fvalid = di < nd;
        if (xi < nx) {
            const int32_t* row = x + (xi / (T_COLS / T_LANES)) * T_COLS + (xi % (T_COLS / T_LANES)) * T_LANES;
            for (int l = 0; l < T_LANES; ++l) put(h.top->x___05Fpayload, l * T_X_W, T_X_W, uint64_t(int64_t(row[l])));
        }
        if (di < nd) {
            const int32_t* row = d + (di / (T_ROWS / T_LANES)) * T_ROWS + (di % (T_ROWS / T_LANES)) * T_LANES;
            for (int l = 0; l < T_LANES; ++l) put(h.top->d___05Fpayload, l * T_D_W, T_D_W, uint64_t(int64_t(row[l])));
        }
        h.cycle();
        if (tx) ++xi;
        if (td) ++di;
        if (xi == nx && di == nd && h.status(ST_BATCHES_OFF, 32) != b0 && h.idle()) break;
        if (h.cycles - c0 > limit) { h.low(); return -1; }
    }
    h.top->x___05Fvalid = 0;
    h.top->d___05Fvalid = 0;
    h.low();
    if (cycles_out) *cycles_out = h.cycles - c0;
    return n;
}

}  // extern "C"
