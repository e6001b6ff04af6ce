// Harness of the whole unit (rtl.tile.TileUnit): drives the Verilator model through its real
// ports (x / d streams, event stream, host chi port, seed, status), one mini-batch per call,
// built as a shared library and called via ctypes (rtl/tile_verilated.py).
//
// Field offsets and widths come from tile_cfg.h, written from the same layouts the RTL was
// generated from. Verilator escapes "__" in port names as "___05F".
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "Vtile.h"
#include "verilated.h"
#include "tile_cfg.h"

namespace {

// bit-field access for narrow (integral) and wide (VlWide) ports alike
template <std::size_t N>
inline void put(VlWide<N>& p, int off, int w, uint64_t v) {
    for (int i = 0; i < w; ++i) {
        const int b = off + i;
        const uint32_t bit = uint32_t((v >> i) & 1u);
        p[b >> 5] = (p[b >> 5] & ~(1u << (b & 31))) | (bit << (b & 31));
    }
}
template <typename T, typename std::enable_if<std::is_integral<T>::value, int>::type = 0>
inline void put(T& p, int off, int w, uint64_t v) {
    const uint64_t mask = (w >= 64) ? ~uint64_t(0) : ((uint64_t(1) << w) - 1);
    p = T((uint64_t(p) & ~(mask << off)) | ((v & mask) << off));
}
template <std::size_t N>
inline uint64_t get(const VlWide<N>& p, int off, int w) {
    uint64_t v = 0;
    for (int i = 0; i < w; ++i) {
        const int b = off + i;
        v |= uint64_t((p[b >> 5] >> (b & 31)) & 1u) << i;
    }
    return v;
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
    uint64_t status(int off, int w) { return get(top->status, off, w); }
    bool idle() { return !status(ST_BUSY_OFF, 1) && !status(ST_PENDING_OFF, 1); }
};

}  // namespace

extern "C" {

void* tile_new() { return new Harness(); }
void tile_free(void* h) { delete static_cast<Harness*>(h); }
uint64_t tile_cycles(void* h) { return static_cast<Harness*>(h)->cycles; }
const char* tile_key() { return TILE_KEY; }

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
        h.top->eval();
        const bool take = h.top->chi_wr___05Fready;
        h.tick();
        if (take) ++a;
        if (h.cycles - c0 > uint64_t(T_GROUPS) * 4 + 1000) return -1;
    }
    h.top->chi_wr___05Fvalid = 0;
    h.top->eval();
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
        h.top->eval();
        if (h.top->chi_rd___05Fvalid) {
            for (int l = 0; l < T_LANES; ++l)
                chi[got * T_LANES + l] = int32_t(sext(get(h.top->chi_rd___05Fpayload, l * T_CHI_W, T_CHI_W), T_CHI_W));
            ++got;
        }
        const bool take = req < T_GROUPS && h.top->chi_rd_addr___05Fready;
        h.tick();
        if (take) ++req;
        if (h.cycles - c0 > uint64_t(T_GROUPS) * 4 + 1000) return -1;
    }
    h.top->chi_rd_addr___05Fvalid = 0;
    h.top->chi_rd___05Fready = 0;
    h.top->eval();
    return int64_t(h.cycles - c0);
}

// One mini-batch: x (batch x cols codes), d (batch x rows codes), scale mantissa m. Events go to
// ev (4 int32 each: row, col, count, neg), at most max_ev; returns the event count (-1: stalled,
// -2: more events than max_ev). Cycles from the first beat to idle go to *cycles_out.
int64_t tile_batch(void* hp, const int32_t* x, const int32_t* d, uint32_t m, int32_t* ev,
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
    for (;;) {
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
        h.top->eval();
        const bool tx = xi < nx && h.top->x___05Fready;
        const bool td = di < nd && h.top->d___05Fready;
        if (h.top->events___05Fvalid) {
            if (n >= max_ev) return -2;
            ev[4 * n + 0] = int32_t(get(h.top->events___05Fpayload, EV_ROW_OFF, EV_ROW_W));
            ev[4 * n + 1] = int32_t(get(h.top->events___05Fpayload, EV_COL_OFF, EV_COL_W));
            ev[4 * n + 2] = int32_t(get(h.top->events___05Fpayload, EV_COUNT_OFF, EV_COUNT_W));
            ev[4 * n + 3] = int32_t(get(h.top->events___05Fpayload, EV_NEG_OFF, 1));
            ++n;
        }
        h.tick();
        if (tx) ++xi;
        if (td) ++di;
        if (xi == nx && di == nd && h.status(ST_BATCHES_OFF, 32) != b0 && h.idle()) break;
        if (h.cycles - c0 > limit) return -1;
    }
    h.top->x___05Fvalid = 0;
    h.top->d___05Fvalid = 0;
    h.top->eval();
    if (cycles_out) *cycles_out = h.cycles - c0;
    return n;
}

}  // extern "C"
