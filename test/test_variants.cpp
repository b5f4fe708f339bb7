// The attention-variant catalogue: every row map, normaliser, slot, feature map, gate and mask against central finite
// differences in double precision (layer by layer and through the whole model), metrics of slots and proxies on
// hand-built matrices, and a short training run of every variant that must end finite and below its starting loss.
// Also the streaming forms and the flash kernel's per-row work against the row forms, the data manipulations (fixed
// token, random positions) and text generation's reproducibility, and the bank conflicts of the staged key tiles.
#include <map>
#include <set>

#include "test_helpers.h"

// One named variant configuration (the flags a user would type).
struct VariantCase {
    const char* name;
    AttnSpec spec;
};

static std::vector<VariantCase> all_variants() {
    std::vector<VariantCase> v;
    auto add = [&](const char* name, std::function<void(AttnSpec&)> set) {
        AttnSpec a;
        set(a);
        v.push_back({name, a});
    };
    add("softmax", [](AttnSpec&) {});
    add("softmax row mass 2", [](AttnSpec& a) { a.row_mass = 2.0f; });
    for (int norm = 0; norm < ANORM_NUM_KINDS; norm++) {
        add("sigmoid", [=](AttnSpec& a) { a.variant = ATTN_SIGMOID; a.normaliser = norm; });
        add("elu1", [=](AttnSpec& a) { a.variant = ATTN_ELU1; a.normaliser = norm; });
        for (int phi = 0; phi < PHI_NUM_KINDS; phi++)
            add("linear kernel", [=](AttnSpec& a) { a.variant = ATTN_LINEAR; a.normaliser = norm; a.phi = phi; });
    }
    add("sigmoid with bias", [](AttnSpec& a) { a.variant = ATTN_SIGMOID; a.sigmoid_bias = -2.0f; });
    add("softpick", [](AttnSpec& a) { a.variant = ATTN_SOFTPICK; });
    add("clipped softmax", [](AttnSpec& a) { a.variant = ATTN_CLIPPED; a.clip_zeta = 1.1f; a.clip_alpha = 1.5f; });
    for (int shared = 0; shared < 2; shared++)
        for (int vs = 0; vs < VSTAR_NUM_KINDS; vs++)
            add("kv slot", [=](AttnSpec& a) { a.slot = SLOT_KV; a.vstar = vs; a.vstar_value = 0.3f; a.slot_shared = shared; });
    add("sink logit", [](AttnSpec& a) { a.slot = SLOT_LOGIT; });
    add("softmax_1", [](AttnSpec& a) { a.slot = SLOT_ZERO; });
    add("value bias", [](AttnSpec& a) { a.value_bias = 1; });
    add("value bias shared", [](AttnSpec& a) { a.value_bias = 1; a.slot_shared = 1; });
    add("sink token", [](AttnSpec& a) { a.sink_token = 1; });
    add("gate elementwise", [](AttnSpec& a) { a.gate = GATE_ELEMENTWISE; });
    add("gate headwise", [](AttnSpec& a) { a.gate = GATE_HEADWISE; });
    add("prefix mask", [](AttnSpec& a) { a.mask = MASK_PREFIX; a.mask_param = 3; });
    add("window mask", [](AttnSpec& a) { a.mask = MASK_WINDOW; a.mask_param = 2; });
    add("kv slot + sigmoid sum + window", [](AttnSpec& a) {
        a.slot = SLOT_KV; a.variant = ATTN_SIGMOID; a.normaliser = ANORM_SUM; a.mask = MASK_WINDOW; a.mask_param = 3; });
    add("sink logit + prefix + gate", [](AttnSpec& a) {
        a.slot = SLOT_LOGIT; a.mask = MASK_PREFIX; a.mask_param = 2; a.gate = GATE_HEADWISE; });
    return v;
}

TEST_CASE("every row map and normaliser: backward matches finite differences", "[variants]") {
    std::mt19937_64 rng(11);
    for (const VariantCase& vc : all_variants()) {
        const AttnSpec& spec = vc.spec;
        for (int n : {1, 2, 7}) {
            auto s = random_vec(n, rng, 1.5), R = random_vec(n, rng);
            std::vector<double> p(n), ds(n), dp = R;
            auto loss = [&] {
                attn_row_forward(spec, s.data(), p.data(), n, 8);
                return dot(R, p.data());
            };
            loss();
            attn_row_backward(spec, s.data(), p.data(), dp.data(), ds.data(), n, 8);
            INFO(vc.name << " norm " << attn_normaliser_names[spec.normaliser] << " n " << n);
            CHECK(fd_check(s, ds, loss) < 1e-6);
        }
    }
}

// The streaming forms (attention_variants.cuh) against the row forms: one row of n entries (entry 0 is the slot when
// the variant has one) split into random key tiles: the forward output, the weights and the score gradients, in double
// (to 1e-12) and in float (to 2e-5). Errors are relative to the scale of the terms each result sums, so a result that
// is small by cancellation (a softmax row's ds at p = 1) is held to its terms' rounding, not to its own size:
// max |p| max |v| for the output, max |p| for the weights, and for ds_j = a_j dp_j + b_j D the largest
// |a_j dp_j| + |b_j D|. Scores up to +-12 so the
// running max grows from tile to tile and the rescale is exercised.
template <typename F>
static double stream_vs_row(const AttnSpec& spec, int n, double scale, std::mt19937_64& rng) {
    const int d = 5, T = 8;
    std::uniform_real_distribution<double> u(-1, 1);
    std::vector<F> s(n), v((size_t)n * d), dO(d), p(n), dp(n), ds(n);
    for (F& x : s) x = F(scale * u(rng));
    for (F& x : v) x = F(u(rng));
    for (F& x : dO) x = F(u(rng));
    bool slot_without_value = spec.slot == SLOT_LOGIT || spec.slot == SLOT_ZERO;
    if (slot_without_value)
        for (int i = 0; i < d; i++) v[i] = 0;
    // the row form: p, O = sum_j p_j v_j, ds
    attn_row_forward(spec, s.data(), p.data(), n, T);
    std::vector<F> o_row(d, F(0));
    for (int j = 0; j < n; j++) {
        dp[j] = 0;
        for (int i = 0; i < d; i++) {
            o_row[i] = sk_fma(p[j], v[(size_t)j * d + i], o_row[i]);
            dp[j] = sk_fma(dO[i], v[(size_t)j * d + i], dp[j]);
        }
    }
    attn_row_backward(spec, s.data(), p.data(), dp.data(), ds.data(), n, T);
    // random tile boundaries; the slot (with a value or without) is its own first tile when there is one
    auto tiles = [&] {
        std::vector<int> cut = {0};
        if (attn_has_slot(spec) && n > 1) cut.push_back(1);
        while (cut.back() < n) cut.push_back(std::min(n, cut.back() + 1 + (int)(rng() % 6)));
        return cut;
    };
    auto value = [&](int j) { return slot_without_value && j == 0 ? (const F*)nullptr : &v[(size_t)j * d]; };
    // forward: one pass where the map has one, then two passes (statistics, then weights) for every map
    double worst = 0;
    auto maxabs = [](const std::vector<F>& x) {
        double m = 0;
        for (F e : x) m = std::max(m, std::fabs((double)e));
        return m;
    };
    auto compare = [&](const std::vector<F>& got, const std::vector<F>& ref, double scale) {
        double maxerr = 0;
        for (size_t i = 0; i < ref.size(); i++) maxerr = std::max(maxerr, std::fabs((double)got[i] - (double)ref[i]));
        scale = std::max(scale, maxabs(ref));
        worst = std::max(worst, scale > 0 ? maxerr / scale : maxerr);
    };
    double p_scale = maxabs(p), o_scale = p_scale * maxabs(v);
    AttnStreamState<F> st = attn_stream_init<F>(spec);
    std::vector<F> acc(d, F(0)), o(d);
    if (attn_stream_one_pass(spec)) {
        std::vector<int> cut = tiles();
        for (size_t k = 0; k + 1 < cut.size(); k++)
            attn_stream_tile(spec, &st, &s[cut[k]], value(cut[k]), d, cut[k + 1] - cut[k], d, acc.data());
        F f = attn_stream_out_scale(spec, st);
        for (int i = 0; i < d; i++) o[i] = acc[i] * f;
        compare(o, o_row, o_scale);
    }
    st = attn_stream_init<F>(spec);
    std::vector<int> cut = tiles();
    for (size_t k = 0; k + 1 < cut.size(); k++)
        attn_stream_tile(spec, &st, &s[cut[k]], value(cut[k]), d, cut[k + 1] - cut[k], d, (F*)nullptr);
    std::fill(acc.begin(), acc.end(), F(0));
    cut = tiles();
    for (size_t k = 0; k + 1 < cut.size(); k++)
        attn_stream_accumulate(spec, st, &s[cut[k]], value(cut[k]), d, cut[k + 1] - cut[k], d, acc.data(), T);
    compare(acc, o_row, o_scale);
    // weights and the backward from the final state: D = dO . O, or clipped's own sum
    std::vector<F> p_stream(n), ds_stream(n);
    F D = 0;
    if (spec.variant == ATTN_CLIPPED)
        for (int j = 0; j < n; j++) D += attn_stream_clipped_dterm(spec, st, s[j], dp[j], T);
    else
        for (int i = 0; i < d; i++) D = sk_fma(dO[i], acc[i], D);
    for (int j = 0; j < n; j++) {
        p_stream[j] = attn_stream_weight(spec, st, s[j], T);
        ds_stream[j] = attn_stream_dscore(spec, st, s[j], dp[j], D, T);
    }
    compare(p_stream, p, p_scale);
    double ds_scale = 0;  // ds_j = a_j dp_j + b_j D: the largest |a_j dp_j| + |b_j D|
    for (int j = 0; j < n; j++)
        ds_scale = std::max(ds_scale, std::fabs((double)attn_stream_dscore(spec, st, s[j], F(1), F(0), T) * dp[j]) +
                                          std::fabs((double)attn_stream_dscore(spec, st, s[j], F(0), F(1), T) * D));
    compare(ds_stream, ds, ds_scale);
    return worst;
}

TEST_CASE("streaming forms over random key tiles equal the row forms (forward, weights, backward; every variant)", "[variants]") {
    std::mt19937_64 rng(5);
    double worst_double = 0, worst_float = 0;
    for (const VariantCase& vc : all_variants()) {
        for (int n : {1, 2, 7, 40}) {
            for (double scale : {1.5, 12.0}) {
                // linear's normalised rows divide by a sum of scores of both signs: at +-12 it cancels in float
                if (vc.spec.variant == ATTN_LINEAR && vc.spec.normaliser != ANORM_NONE && scale > 2) continue;
                INFO(vc.name << " norm " << attn_normaliser_names[vc.spec.normaliser] << " n " << n << " scale " << scale);
                for (int rep = 0; rep < 4; rep++) {
                    double ed = stream_vs_row<double>(vc.spec, n, scale, rng);
                    double ef = stream_vs_row<float>(vc.spec, n, scale, rng);
                    CHECK(ed < 1e-12);
                    CHECK(ef < 2e-5);
                    worst_double = std::max(worst_double, ed);
                    worst_float = std::max(worst_float, ef);
                }
            }
        }
    }
    WARN("worst relative difference, double " << worst_double << ", float " << worst_float);
}

static double maxabs(const float* x, int n) {
    double m = 0;
    for (int i = 0; i < n; i++) m = std::max(m, (double)std::fabs(x[i]));
    return m;
}

// all_variants() and masks that span several tiles, with slots and the two-pass map
static std::vector<VariantCase> flash_cases() {
    std::vector<VariantCase> cases = all_variants();
    AttnSpec a;
    a.mask = MASK_WINDOW, a.mask_param = 40;
    cases.push_back({"window 40", a});
    a.slot = SLOT_LOGIT;
    cases.push_back({"window 40 + logit slot", a});
    a = AttnSpec();
    a.mask = MASK_PREFIX, a.mask_param = 70, a.slot = SLOT_KV;
    cases.push_back({"prefix 70 + kv slot", a});
    a.variant = ATTN_CLIPPED, a.clip_zeta = 1.1f, a.clip_alpha = 1.5f;
    cases.push_back({"prefix 70 + kv slot + clipped", a});
    return cases;
}

// kernels/attention_flash.cuh, the per-row work of the flash-style GPU kernel, run here the way the kernel runs it:
// query tiles of `tile` rows, the key tiles their rows can see staged into a buffer (zeros past T, as the kernel
// stages them), every row through its slot and the tiles, once per pass. Against the row form, head size 64, every
// configuration of all_variants() plus multi-tile windows and prefixes, T from 1 to 200 (partial tiles), query and
// key tiles of 64 (the kernel's), 16, and of different sizes. The kernel's own staging and synchronisation are not
// covered (they need a GPU).
TEST_CASE("the flash kernel's row functions over query and key tiles equal the row form (every variant, mask, slot)",
          "[variants]") {
    constexpr int hs = 64, KS = flash_stage_stride(hs);
    static_assert(KS > hs, "the staged rows are padded, so a read past a row meets NaN");
    std::mt19937_64 rng(9);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    double worst = 0;
    int checked_rows = 0;
    for (const VariantCase& vc : flash_cases()) {
        const AttnSpec& spec = vc.spec;
        for (int T : {1, 37, 64, 130, 200}) {
            for (auto [qtile, tile] : {std::pair<int, int>{64, 64}, {16, 16}, {48, 16}, {16, 48}}) {
                INFO(vc.name << " norm " << attn_normaliser_names[spec.normaliser] << " T " << T << " query tile "
                             << qtile << " key tile " << tile);
                std::vector<float> q((size_t)T * hs), k((size_t)T * hs), v((size_t)T * hs), vslot(hs);
                for (auto* x : {&q, &k, &v, &vslot})
                    for (float& e : *x) e = nd(rng);
                float tau = 1.0f / sqrtf((float)hs), s_slot = 2.0f * nd(rng);
                bool slot_value = spec.slot == SLOT_KV && spec.vstar != VSTAR_ZERO;
                // the reference: the row form, one row at a time
                std::vector<float> ref((size_t)T * hs, 0.0f), got((size_t)T * hs, 0.0f), s(T + 1), p(T + 1);
                std::vector<double> scale(T);  // the terms' size: max |p| max |v| over the row
                for (int t = 0; t < T; t++) {
                    int lo, hi, n = 0;
                    attn_visible_keys(spec, t, T, &lo, &hi);
                    if (attn_has_slot(spec)) s[n++] = s_slot;
                    for (int j = lo; j < hi; j++) {
                        float dot = 0;
                        for (int d = 0; d < hs; d++) dot = sk_fma(q[(size_t)t * hs + d], k[(size_t)j * hs + d], dot);
                        s[n++] = dot * tau;
                    }
                    attn_row_forward(spec, s.data(), p.data(), n, T);
                    int key0 = attn_has_slot(spec);
                    double maxp = 0, maxv = slot_value ? maxabs(vslot.data(), hs) : 0.0;
                    for (int i = 0; i < n; i++) maxp = std::max(maxp, (double)std::fabs(p[i]));
                    for (int j = lo; j < hi; j++) maxv = std::max(maxv, maxabs(&v[(size_t)j * hs], hs));
                    scale[t] = maxp * maxv;
                    for (int d = 0; d < hs; d++) {
                        float y = slot_value ? p[0] * vslot[d] : 0.0f;
                        for (int j = lo; j < hi; j++) y = sk_fma(p[key0 + j - lo], v[(size_t)j * hs + d], y);
                        ref[(size_t)t * hs + d] = y;
                    }
                }
                // the kernel's order of work, the tile's rows KS apart as the kernels stage them, NaN between
                std::vector<float> ks((size_t)tile * KS, NAN), vs((size_t)tile * KS, NAN), scratch(tile);
                for (int t0 = 0; t0 < T; t0 += qtile) {
                    int t1 = std::min(T, t0 + qtile), klo, khi;
                    flash_tile_keys(spec, t0, t1, T, &klo, &khi);
                    klo -= klo % tile;
                    std::vector<FlashRow<hs>> rows(t1 - t0);
                    for (int t = t0; t < t1; t++) flash_row_begin(&rows[t - t0], spec, &q[(size_t)t * hs], t, T);
                    for (int pass = 0; pass < flash_passes(spec); pass++) {
                        if (attn_has_slot(spec))
                            for (auto& r : rows) flash_row_slot(&r, spec, s_slot, slot_value ? vslot.data() : nullptr, pass, T);
                        for (int k0 = klo; k0 < khi; k0 += tile) {
                            for (int e = 0; e < tile * hs; e++) {
                                int j = k0 + e / hs;
                                ks[e / hs * KS + e % hs] = j < T ? k[(size_t)j * hs + e % hs] : 0.0f;
                                vs[e / hs * KS + e % hs] = j < T ? v[(size_t)j * hs + e % hs] : 0.0f;
                            }
                            for (auto& r : rows)
                                flash_row_tile<hs, KS>(&r, spec, ks.data(), vs.data(), k0, std::min(tile, T - k0), tau,
                                                       pass, T, scratch.data());
                        }
                    }
                    for (int t = t0; t < t1; t++) flash_row_finish(&rows[t - t0], spec, &got[(size_t)t * hs]);
                }
                // per row, relative to the size of the terms it sums (or of the result, when larger)
                for (int t = 0; t < T; t++) {
                    double maxerr = 0;
                    for (int d = 0; d < hs; d++)
                        maxerr = std::max(maxerr, (double)std::fabs(got[(size_t)t * hs + d] - ref[(size_t)t * hs + d]));
                    double size = std::max(scale[t], maxabs(&ref[(size_t)t * hs], hs));
                    double err = size > 0 ? maxerr / size : maxerr;
                    CHECK(err < 2e-5);
                    worst = std::max(worst, err);
                    checked_rows++;
                }
            }
        }
    }
    CHECK(checked_rows > 60000);
    WARN("flash rows against the row form: " << checked_rows << " rows, worst error " << worst);
}

// The flash backward's functions (kernels/attention_flash.cuh) in the kernel's order: D from the forward's output,
// dq over the key tiles each query tile sees, dk and dv over the query tiles each key tile is seen by, the slot's
// ds_* and p_*. Against the row form's backward (attn_row_backward), per tensor, relative to its largest entry.
TEST_CASE("the flash backward's row functions over tiles equal the row form's gradients (every variant, mask, slot)",
          "[variants]") {
    constexpr int hs = 64, KS = flash_stage_stride(hs);
    std::mt19937_64 rng(17);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    double worst = 0;
    for (const VariantCase& vc : flash_cases()) {
        const AttnSpec& spec = vc.spec;
        // T >= 3: a gradient tensor of one or two rows can be all cancellation (a one-entry row's ds is 0 in exact
        // arithmetic), where no relative measure applies; the streaming test covers short rows with a term scale
        for (int T : {3, 37, 130}) {
            for (auto [qtile, tile] : {std::pair<int, int>{64, 64}, {16, 48}, {48, 16}}) {
                INFO(vc.name << " norm " << attn_normaliser_names[spec.normaliser] << " T " << T << " query tile "
                             << qtile << " key tile " << tile);
                size_t n = (size_t)T * hs;
                std::vector<float> q(n), k(n), v(n), dout(n), kstar(hs), vstar(hs);
                for (auto* x : {&q, &k, &v, &dout, &kstar, &vstar})
                    for (float& e : *x) e = nd(rng);
                float tau = 1.0f / sqrtf((float)hs), logit = 2.0f * nd(rng);
                bool slot = attn_has_slot(spec), slot_value = spec.slot == SLOT_KV && spec.vstar != VSTAR_ZERO;
                const float* v_slot = slot_value ? vstar.data() : nullptr;
                auto slot_score_of = [&](int t) {
                    if (spec.slot != SLOT_KV) return spec.slot == SLOT_LOGIT ? logit : 0.0f;
                    float dot = 0;
                    for (int d = 0; d < hs; d++) dot = sk_fma(q[(size_t)t * hs + d], kstar[d], dot);
                    return dot * tau;
                };
                // the reference: the row form forward and backward, row by row
                std::vector<float> dq_ref(n, 0.0f), dk_ref(n, 0.0f), dv_ref(n, 0.0f), dss_ref(T), ps_ref(T);
                std::vector<float> s(T + 1), p(T + 1), dp(T + 1), ds(T + 1);
                for (int t = 0; t < T; t++) {
                    int lo, hi, m = 0;
                    attn_visible_keys(spec, t, T, &lo, &hi);
                    if (slot) {
                        s[m] = slot_score_of(t);
                        dp[m] = 0;
                        if (slot_value)
                            for (int d = 0; d < hs; d++) dp[m] = sk_fma(dout[(size_t)t * hs + d], vstar[d], dp[m]);
                        m++;
                    }
                    for (int j = lo; j < hi; j++, m++) {
                        float dot = 0, dv = 0;
                        for (int d = 0; d < hs; d++) {
                            dot = sk_fma(q[(size_t)t * hs + d], k[(size_t)j * hs + d], dot);
                            dv = sk_fma(dout[(size_t)t * hs + d], v[(size_t)j * hs + d], dv);
                        }
                        s[m] = dot * tau;
                        dp[m] = dv;
                    }
                    attn_row_forward(spec, s.data(), p.data(), m, T);
                    attn_row_backward(spec, s.data(), p.data(), dp.data(), ds.data(), m, T);
                    int key0 = slot;
                    if (slot) dss_ref[t] = ds[0], ps_ref[t] = p[0];
                    for (int j = lo; j < hi; j++)
                        for (int d = 0; d < hs; d++) {
                            float g = ds[key0 + j - lo] * tau;
                            dq_ref[(size_t)t * hs + d] += g * k[(size_t)j * hs + d];
                            dk_ref[(size_t)j * hs + d] += g * q[(size_t)t * hs + d];
                            dv_ref[(size_t)j * hs + d] += p[key0 + j - lo] * dout[(size_t)t * hs + d];
                        }
                    if (spec.slot == SLOT_KV)
                        for (int d = 0; d < hs; d++) dq_ref[(size_t)t * hs + d] += ds[0] * tau * kstar[d];
                }
                // the forward's state and output per row (one key tile per row: its tiling is the forward test's)
                std::vector<AttnStreamState<float>> st(T);
                std::vector<float> out(n), scratch(T);
                for (int t = 0; t < T; t++) {
                    FlashRow<hs> r;
                    flash_row_begin(&r, spec, &q[(size_t)t * hs], t, T);
                    for (int pass = 0; pass < flash_passes(spec); pass++) {
                        if (slot) flash_row_slot(&r, spec, slot_score_of(t), v_slot, pass, T);
                        flash_row_tile(&r, spec, k.data(), v.data(), 0, T, tau, pass, T, scratch.data());
                    }
                    flash_row_finish(&r, spec, &out[(size_t)t * hs]);
                    st[t] = r.st;
                }
                // the backward in the kernels' order
                std::vector<FlashGradRow<hs>> rows(T);
                std::vector<float> ks((size_t)tile * KS, NAN), vs((size_t)tile * KS, NAN), dq(n), dk(n, 0.0f),
                    dv(n, 0.0f);
                std::vector<float> dss(T), ps(T);
                auto stage = [&](int k0) {  // rows KS apart, as the kernels stage them, NaN between
                    for (int e = 0; e < tile * hs; e++) {
                        int j = k0 + e / hs;
                        ks[e / hs * KS + e % hs] = j < T ? k[(size_t)j * hs + e % hs] : 0.0f;
                        vs[e / hs * KS + e % hs] = j < T ? v[(size_t)j * hs + e % hs] : 0.0f;
                    }
                };
                for (int t0 = 0; t0 < T; t0 += qtile) {  // dq: one owner per query row
                    int t1 = std::min(T, t0 + qtile), klo, khi;
                    flash_tile_keys(spec, t0, t1, T, &klo, &khi);
                    klo -= klo % tile;
                    for (int t = t0; t < t1; t++)
                        flash_grad_row_begin(&rows[t], spec, &q[(size_t)t * hs], &dout[(size_t)t * hs], st[t],
                                             &out[(size_t)t * hs], t, T);
                    if (spec.variant == ATTN_CLIPPED) {
                        for (int t = t0; t < t1 && slot; t++)
                            flash_clipped_D_slot(&rows[t], spec, slot_score_of(t), v_slot, T);
                        for (int k0 = klo; k0 < khi; k0 += tile) {
                            stage(k0);
                            for (int t = t0; t < t1; t++)
                                flash_clipped_D_tile<hs, KS>(&rows[t], spec, ks.data(), vs.data(), k0,
                                                             std::min(tile, T - k0), tau, T);
                        }
                    }
                    for (int t = t0; t < t1 && slot; t++) {
                        flash_dq_slot(&rows[t], spec, slot_score_of(t), v_slot, T, &dss[t], &ps[t]);
                        if (spec.slot == SLOT_KV)
                            for (int d = 0; d < hs; d++) rows[t].dq[d] = sk_fma(dss[t] * tau, kstar[d], rows[t].dq[d]);
                    }
                    std::vector<float> g(tile);
                    for (int k0 = klo; k0 < khi; k0 += tile) {
                        stage(k0);
                        for (int t = t0; t < t1; t++)
                            flash_dq_tile<hs, KS>(&rows[t], spec, ks.data(), vs.data(), k0, std::min(tile, T - k0),
                                                  tau, T, g.data());
                    }
                    for (int t = t0; t < t1; t++)
                        for (int d = 0; d < hs; d++) dq[(size_t)t * hs + d] = rows[t].dq[d];
                }
                for (int j0 = 0; j0 < T; j0 += tile) {  // dk, dv: one owner per key row, query tiles in order
                    int j1 = std::min(T, j0 + tile), qlo, qhi;
                    flash_tile_queries(spec, j0, j1, T, &qlo, &qhi);
                    qlo -= qlo % qtile;
                    for (int t0 = qlo; t0 < qhi; t0 += qtile)
                        for (int j = j0; j < j1; j++)
                            flash_dkv_tile(&dk[(size_t)j * hs], &dv[(size_t)j * hs], spec, &k[(size_t)j * hs],
                                           &v[(size_t)j * hs], j, &rows[t0], std::min(qtile, T - t0), tau, T);
                }
                auto rel = [](const std::vector<float>& got, const std::vector<float>& ref) {
                    double maxerr = 0, maxref = 0;
                    for (size_t i = 0; i < ref.size(); i++) {
                        maxerr = std::max(maxerr, (double)std::fabs(got[i] - ref[i]));
                        maxref = std::max(maxref, (double)std::fabs(ref[i]));
                    }
                    return maxref > 0 ? maxerr / maxref : maxerr;
                };
                double e = std::max({rel(dq, dq_ref), rel(dk, dk_ref), rel(dv, dv_ref)});
                if (slot) e = std::max({e, rel(dss, dss_ref), rel(ps, ps_ref)});
                CHECK(e < 5e-5);
                worst = std::max(worst, e);
            }
        }
    }
    WARN("flash backward against the row form: worst error per tensor " << worst);
}

// The passes shared memory takes to serve one read of a warp, in the model commonly described (NVIDIA does not publish
// how a vector read is split; ncu's l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum counts it on a GPU),
// thread i reading `width` floats (1, 2 or 4: 4, 8 or 16 bytes, one aligned vector) at float address addr[i]: 128 bytes
// a pass, so a 16-byte read is served 8 threads at a time, an 8-byte one 16 and a 4-byte one all 32; within such a
// group a bank (the float address mod 32) asked for several different words serves them one a pass (the same word to
// many threads is one broadcast).
static int shared_read_passes(const std::vector<int>& addr, int width) {
    int per_group = 32 / width, passes = 0;
    for (int g0 = 0; g0 < 32; g0 += per_group) {
        std::map<int, std::set<int>> words;  // bank -> the words asked of it
        for (int i = g0; i < g0 + per_group; i++)
            for (int w = 0; w < width; w++) words[(addr[i] + w) % 32].insert(addr[i] + w);
        size_t most = 0;
        for (const auto& bank : words) most = std::max(most, bank.second.size());
        passes += (int)most;
    }
    return passes;
}

// The streamed attention's forward and dq blocks read the staged key tile in 16-byte vectors (ld.shared.v4.f32 in the
// PTX: dev/gpu/resources.py --ptx 'FlashRow|FlashGradRow'), each thread a row. Under a sliding window thread i of a
// warp reads row i + c at the same step, so the rows' stride decides the bank conflicts; under a causal mask every
// thread reads the same row (a broadcast).
TEST_CASE("the streamed attention's staged key rows: 16-byte aligned, and no bank conflicts when a warp reads 32 "
          "different rows", "[variants]") {
    for (int hs : {4, 8, 16, 32, 64, 96, 128}) {
        int KS = flash_stage_stride(hs);
        INFO("head size " << hs << ", staged stride " << KS);
        CHECK(KS >= hs);
        CHECK(KS % 4 == 0);  // every row starts 16-byte aligned, so the vector reads stay
        CHECK(KS <= hs + 4);
        for (int shift : {0, 5, 63})
            for (int c = 0; c < hs; c += 4) {
                std::vector<int> window(32), causal(32, shift * KS + c), unpadded(32);
                for (int i = 0; i < 32; i++) window[i] = (i + shift) * KS + c, unpadded[i] = (i + shift) * hs + c;
                CHECK(shared_read_passes(window, 4) == 4);  // one pass for each quarter of the warp
                CHECK(shared_read_passes(causal, 4) == 4);
                // the stride the kernels had: a quarter's 8 rows in 4 groups of banks at hs 8 (2 reads each), 2 at
                // hs 16 (4 each), 1 at a multiple of 32 (all 8)
                if (hs >= 8) CHECK(shared_read_passes(unpadded, 4) == (hs == 8 ? 8 : hs == 16 ? 16 : 32));
            }
    }
    // and the model itself: 32 threads reading 32 consecutive floats take one pass, 32 floats 32 apart take 32
    std::vector<int> row(32), column(32);
    for (int i = 0; i < 32; i++) row[i] = i, column[i] = 32 * i;
    CHECK(shared_read_passes(row, 1) == 1);
    CHECK(shared_read_passes(column, 1) == 32);
    CHECK(shared_read_passes(std::vector<int>(32, 7), 1) == 1);
}

TEST_CASE("row maps: closed forms", "[variants]") {
    double s[3] = {0.5, -1.0, 2.0}, p[3];
    AttnSpec a;
    a.variant = ATTN_SIGMOID;
    attn_row_forward(a, s, p, 3, 8);
    CHECK(p[0] == Approx(1 / (1 + exp(-0.5))).epsilon(1e-14));
    a.normaliser = ANORM_SUM;
    attn_row_forward(a, s, p, 3, 8);
    CHECK(p[0] + p[1] + p[2] == Approx(1.0).epsilon(1e-7));
    a = AttnSpec();
    a.variant = ATTN_SOFTPICK;  // relu(e^s - 1) / (sum |e^s - 1| + 1e-6)
    attn_row_forward(a, s, p, 3, 8);
    double z = (exp(0.5) - 1) + (1 - exp(-1.0)) + (exp(2.0) - 1) + 1e-6;
    CHECK(p[0] == Approx((exp(0.5) - 1) / z).epsilon(1e-12));
    CHECK(p[1] == 0.0);
    a = AttnSpec();
    a.variant = ATTN_LINEAR;
    a.normaliser = ANORM_CLAMP;  // |sum| = 1.5 > 1
    attn_row_forward(a, s, p, 3, 8);
    CHECK(p[2] == Approx(2.0 / 1.5).epsilon(1e-14));
    a = AttnSpec();
    a.row_mass = 2.0f;
    attn_row_forward(a, s, p, 3, 8);
    CHECK(p[0] + p[1] + p[2] == Approx(2.0).epsilon(1e-14));
    a = AttnSpec();  // masks
    int lo, hi;
    a.mask = MASK_PREFIX; a.mask_param = 3;
    attn_visible_keys(a, 0, 8, &lo, &hi); CHECK(lo == 0); CHECK(hi == 3);
    attn_visible_keys(a, 5, 8, &lo, &hi); CHECK(lo == 0); CHECK(hi == 6);
    CHECK(!attn_position_has_loss(a, 1)); CHECK(attn_position_has_loss(a, 2));
    a.mask = MASK_WINDOW; a.mask_param = 3;
    attn_visible_keys(a, 5, 8, &lo, &hi); CHECK(lo == 3); CHECK(hi == 6);
    attn_visible_keys(a, 1, 8, &lo, &hi); CHECK(lo == 0); CHECK(hi == 2);
}

TEST_CASE("the queries that see a key are exactly the transpose of the keys each query sees", "[variants]") {
    for (int mask : {MASK_CAUSAL, MASK_PREFIX, MASK_WINDOW})
        for (int param : {1, 2, 5, 9, 30})
            for (int T : {1, 7, 16}) {
                AttnSpec a;
                a.mask = mask;
                a.mask_param = mask == MASK_CAUSAL ? 0 : param;
                for (int j = 0; j < T; j++) {
                    int qlo, qhi;
                    attn_visible_queries(a, j, T, &qlo, &qhi);
                    for (int t = 0; t < T; t++) {
                        int lo, hi;
                        attn_visible_keys(a, t, T, &lo, &hi);
                        INFO("mask " << attn_mask_names[mask] << " param " << param << " T " << T << " t " << t
                                     << " j " << j);
                        REQUIRE((lo <= j && j < hi) == (qlo <= t && t < qhi));
                    }
                }
            }
}

// The attention core with its slot parameters, for every variant: q, k, v, k*, v*, sigma, v_bias.
TEST_CASE("attention core backward matches finite differences for every variant, slot and mask", "[variants]") {
    std::mt19937_64 rng(12);
    const int B = 2, T = 5, C = 8, NH = 2, hs = 4;
    for (const VariantCase& vc : all_variants()) {
        AttnSpec spec = vc.spec;
        spec.phi = PHI_NONE;  // the feature map is its own layer, tested through the whole model
        spec.gate = GATE_NONE;
        spec.sink_token = 0;
        int S = spec.slot_shared ? 1 : NH;
        auto qkv = random_vec(B * T * 3 * C, rng), R = random_vec(B * T * C, rng);
        auto kstar = random_vec(S * hs, rng), vstar = random_vec(S * hs, rng), sigma = random_vec(NH, rng),
             vbias = random_vec(S * hs, rng);
        std::vector<double> work(3 * B * NH * T * (T + 1)), ds(B * NH * T * (T + 1));
        std::vector<double> out(B * T * C), att(B * NH * T * T), att_slot(B * NH * T);
        AttnParams<double> ap{spec, nullptr, kstar.data(), spec.vstar == VSTAR_LEARN ? vstar.data() : nullptr,
                              sigma.data(), spec.value_bias ? vbias.data() : nullptr, spec.slot_shared};
        auto loss = [&] {
            attention_forward(out.data(), att.data(), att_slot.data(), work.data(), qkv.data(), qkv.data() + C, 3 * C,
                              qkv.data() + 2 * C, ap, B, T, C, NH);
            return dot(R, out.data());
        };
        loss();
        std::vector<double> dqkv(B * T * 3 * C, 0), dkstar(S * hs, 0), dvstar(S * hs, 0), dsigma(NH, 0),
            dvbias(S * hs, 0), partial(B * NH * (3 * hs + 1));
        AttnParamGrads<double> g{spec.slot == SLOT_KV ? dkstar.data() : nullptr,
                                 spec.slot == SLOT_KV && spec.vstar == VSTAR_LEARN ? dvstar.data() : nullptr,
                                 spec.slot == SLOT_LOGIT ? dsigma.data() : nullptr,
                                 spec.value_bias ? dvbias.data() : nullptr, partial.data()};
        attention_backward(dqkv.data(), dqkv.data() + C, 3 * C, dqkv.data() + 2 * C, g, ds.data(), work.data(), R.data(), qkv.data(),
                           qkv.data() + C, qkv.data() + 2 * C, att.data(), att_slot.data(), ap, B, T, C, NH);
        INFO(vc.name << " (" << attn_variant_names[spec.variant] << ", norm " << attn_normaliser_names[spec.normaliser] << ", slot "
             << attn_slot_names[spec.slot] << ", vstar " << vstar_names[spec.vstar] << ", mask "
             << attn_mask_names[spec.mask] << ")");
        CHECK(fd_check(qkv, dqkv, loss) < 1e-6);
        if (spec.slot == SLOT_KV) CHECK(fd_check(kstar, dkstar, loss) < 1e-6);
        if (spec.slot == SLOT_KV && spec.vstar == VSTAR_LEARN) CHECK(fd_check(vstar, dvstar, loss) < 1e-6);
        if (spec.slot == SLOT_LOGIT) CHECK(fd_check(sigma, dsigma, loss) < 1e-6);
        if (spec.value_bias) CHECK(fd_check(vbias, dvbias, loss) < 1e-6);
        if (spec.slot == SLOT_ZERO) {  // softmax_1: each row's weights plus the slot's sum to one
            double row = att_slot[0];
            for (int j = 0; j < T; j++) row += att[j];
            CHECK(row == Approx(1.0).epsilon(1e-12));
        }
    }
}

// Every variant inside the whole model, all parameter tensors (feature-map MLP, gate, sink token included), with
// pre- and post-norm and learned positions (so the sink token's position 0 gets a gradient too).
TEST_CASE("whole-model backward matches finite differences for every variant", "[variants][model]") {
    std::mt19937_64 rng(13);  // the batch
    const int B = 2, T = 5;
    std::vector<int> x(B * T), y(B * T);
    for (int i = 0; i < B * T; i++) { x[i] = rng() % 11; y[i] = rng() % 11; }
    int cases = 0;
    for (const VariantCase& vc : all_variants())
        for (int place = 0; place < PLACE_NUM_KINDS; place++) {
            if (vc.spec.slot == SLOT_KV && vc.spec.phi != PHI_NONE) continue;
            ModelConfig c = make_config(8, 11, 2, 2, 8, 12, NORM_RMSNORM, place, FFN_SWIGLU,
                                        place ? POS_LEARNED : POS_ROPE, 0, place, INIT_GPT2);
            c.attn = vc.spec;
            validate_model_config(c, vc.name);
            INFO(vc.name << " (" << attn_variant_names[c.attn.variant] << ", norm " << attn_normaliser_names[c.attn.normaliser]
                 << ", phi " << attn_phi_names[c.attn.phi] << ") " << placement_names[place]);
            // signed weights normalised by their sum (linear kernel, Z = sum + 1e-8) can put Z near zero: the loss is
            // then steep, and a smaller step keeps the central difference's truncation error down
            bool steep = c.attn.variant == ATTN_LINEAR && c.attn.normaliser == ANORM_SUM && c.attn.phi != PHI_ELU1;
            check_model_gradients(c, x, y, B, T, 100 + cases, 6, steep ? 1e-6 : 1e-5, 1e-5);
            cases++;
        }
    CHECK(cases >= 60);
}

TEST_CASE("slot metrics: Sink_* and alpha_* read index 0 of the (T+1) x (T+1) matrix", "[variants][sink]") {
    // T = 3 real tokens; the slot takes 0.6 of every real row; the slot's own row is one-hot on itself
    const int T = 3, Tw = 4;
    double W[Tw * Tw] = {1, 0, 0, 0,
                         0.6, 0.4, 0, 0,
                         0.6, 0.2, 0.2, 0,
                         0.6, 0.1, 0.1, 0.2};
    SinkAccumulator acc;
    sink_begin(&acc, 1, 1, T, 0.3f, 1, 0);
    sink_add_head(&acc, 0, 0, W);
    sink_end_sequence(&acc);
    SinkReport r = sink_finish(&acc);
    CHECK(r.alpha_star[0] == Approx((1 + 0.6 * 3) / 4).epsilon(1e-15));  // (1 + sum_t A[t,*]) / (T+1)
    CHECK(r.sink_star == 100.0);
    CHECK(r.alpha1[0] == Approx((0.4 + 0.2 + 0.1) / 3).epsilon(1e-15));  // real token 1 = index 1, rows 1..3
    CHECK(r.sink[0] == 0.0);
    CHECK(r.row_mass[0] == Approx(1.0).epsilon(1e-15));
    std::string js = sink_report_json_fields(r);
    CHECK(js.find("\"sink_star\":100") != std::string::npos);
    CHECK(js.find("\"proxy\":false") != std::string::npos);
}

TEST_CASE("proxy metrics: |w| / sum |w| per row, row mass of the raw weights", "[variants][sink]") {
    // unnormalised signed weights; proxy row 1 = (|2|, |-2|) / 4 = (0.5, 0.5)
    const int T = 3;
    double W[T * T] = {3, 0, 0,
                       2, -2, 0,
                       -1, 0.5, 0.5};
    SinkAccumulator acc;
    sink_begin(&acc, 1, 1, T, 0.45f, 0, 1);
    sink_add_head(&acc, 0, 0, W);
    sink_end_sequence(&acc);
    SinkReport r = sink_finish(&acc);
    CHECK(r.alpha1[0] == Approx((1.0 + 0.5 + 0.5) / 3).epsilon(1e-15));
    CHECK(r.sink[0] == 100.0);                              // 0.667 > 0.45
    CHECK(r.sink[1] == 0.0);                                // key 1: (0.5 + 0.25) / 2 = 0.375 < 0.45
    CHECK(r.row_mass[0] == Approx((3.0 + 0.0 + 0.0) / 3).epsilon(1e-15));
    CHECK(r.proxy == 1);
}

TEST_CASE("sink_visible_count is the count of sink_visible over the keys", "[variants][sink]") {
    std::mt19937_64 rng(5);
    for (int trial = 0; trial < 2000; trial++) {
        int T = 1 + (int)(rng() % 12), t = (int)(rng() % T);
        int lo = (int)(rng() % (T + 3)) - 1, hi = (int)(rng() % (T + 3)) - 1;  // empty, partial, beyond the ends
        std::vector<int> los(T, 0), his(T, 0);
        los[t] = lo;
        his[t] = hi;
        for (int slot0 = 0; slot0 < 2; slot0++)
            for (int causal = 0; causal < 2; causal++) {
                SinkVisibility v;
                if (!causal) {
                    v.lo = los.data();
                    v.hi = his.data();
                    v.slot0 = slot0;
                }
                int n = 0;
                for (int k = 0; k < T; k++) n += sink_visible(v, t, k);
                INFO("T " << T << " t " << t << " lo " << lo << " hi " << hi << " slot0 " << slot0 << " causal "
                          << causal);
                REQUIRE(sink_visible_count(v, t, T) == n);
            }
    }
}

// The probe's sink report, each head after the other on one thread as sink_add_head / sink_add_hidden / sink_add_kv
// read them: the order measure_sinks must reproduce when it measures heads in parallel.
static SinkReport sinks_one_after_the_other(Engine& e, const std::vector<int>& probe, int S, int T, float eps) {
    const ModelConfig& c = e.config();
    const AttnSpec& at = c.attn;
    int C = c.channels, NH = c.num_heads, L = c.num_layers, off = at.sink_token, slot = attn_has_slot(at);
    int Tm = T + off, Tw = T + (off || slot);
    SinkAccumulator acc;
    sink_begin(&acc, L, NH, T, eps, off || slot, !attn_is_probability(at));
    ProbeVisibility pvis(at, T);
    std::vector<float> W((size_t)Tw * Tw);
    for (int s0 = 0; s0 < S; s0 += SINK_PROBE_CHUNK) {
        int n = std::min(SINK_PROBE_CHUNK, S - s0);
        ProbeView pv = e.probe(probe.data() + (size_t)s0 * T, n, T);
        size_t BTC = (size_t)n * Tm * C;
        for (int b = 0; b < n; b++) {
            size_t first = ((size_t)b * Tm + off) * C;
            sink_add_hidden(&acc, 0, pv.encoded + first, C);
            for (int l = 0; l < L; l++) {
                for (int h = 0; h < NH; h++) {
                    const float* att = pv.att + ((size_t)l * n * NH + (size_t)b * NH + h) * Tm * Tm;
                    if (!slot) {
                        sink_add_head(&acc, l, h, att, pvis.vis());
                        continue;
                    }
                    slot_matrix(W.data(), att, pv.att_slot + ((size_t)l * n * NH + (size_t)b * NH + h) * Tm, Tm);
                    sink_add_head(&acc, l, h, W.data(), pvis.vis());
                }
                sink_add_hidden(&acc, l + 1, pv.residual + l * BTC + first, C);
                const float* qkv = pv.qkv + l * BTC * 3 + first * 3;
                sink_add_kv(&acc, l, qkv + C, qkv + 2 * C, C, (size_t)3 * C);
            }
            sink_end_sequence(&acc);
        }
    }
    return sink_finish(&acc);
}

TEST_CASE("measure_sinks, heads and layers measured in parallel, gives the one-after-the-other report bit for bit, "
          "every variant", "[variants][sink]") {
    const int S = 11, T = 9;  // a full chunk of 8 sequences and a partial one
    std::mt19937_64 rng(3);
    std::vector<int> probe(S * T);
    for (int& x : probe) x = (int)(rng() % 16);
    for (const VariantCase& vc : all_variants()) {
        INFO(vc.name);
        ModelConfig c =
            make_config(16, 16, 2, 3, 12, 16, NORM_RMSNORM, PLACE_PRE, FFN_SWIGLU, POS_ROPE, 0, 0, INIT_LLAMA);
        c.attn = vc.spec;
        // resolved as model_from_flags resolves them
        if (std::isnan(c.attn.sigmoid_bias)) c.attn.sigmoid_bias = -logf((float)T);
        if (c.attn.variant == ATTN_CLIPPED && c.attn.clip_len == 0) c.attn.clip_len = T + c.attn.sink_token;
        config_finalize(&c);
        ModelEngine e(c, EngineOptions());
        std::vector<float> params(e.num_params());
        init_params(c, 7, params.data());
        for (float& p : params) p *= 4;  // sharper attention than at initialisation
        e.set_params(params.data());
        SinkReport a = measure_sinks(e, probe, S, T, 0.1f), b = sinks_one_after_the_other(e, probe, S, T, 0.1f);
        CHECK(a.seqs == S);
        CHECK(memcmp(a.sink, b.sink, sizeof a.sink) == 0);
        CHECK(memcmp(&a.sink_star, &b.sink_star, sizeof a.sink_star) == 0);
        for (auto field : {&SinkReport::alpha1, &SinkReport::alpha_star, &SinkReport::norm_ratio,
                           &SinkReport::top1_median, &SinkReport::k1_ratio, &SinkReport::v1_ratio, &SinkReport::entropy,
                           &SinkReport::row_mass}) {
            const std::vector<double>&x = a.*field, &y = b.*field;
            CHECK((x.size() == y.size() && (x.empty() || memcmp(x.data(), y.data(), x.size() * sizeof(double)) == 0)));
        }
        CHECK(sink_report_json_fields(a) == sink_report_json_fields(b));
        // probes kept in the engine's arena (the thread's copies) hold the views' values, one after the other in
        // the bytes the thread's memory budget counts; after a send the next kept probe starts again at the front
        int Tm = T + c.attn.sink_token;
        size_t first = HeldProbeChunk::bytes(c, 8, Tm) / sizeof(float), second = HeldProbeChunk::bytes(c, 3, Tm) / 4;
        CHECK(e.reserve(8, T, 8, T, 0, first + second) == first + second);  // the CPU grants what is asked
        ProbeView kept[2] = {e.probe(probe.data(), 8, T, true), e.probe(probe.data() + 8 * T, 3, T, true)};
        e.probe_send().wait();
        for (int i = 0; i < 2; i++) {
            int n = i ? 3 : 8;
            ProbeView pv = e.probe(probe.data() + (i ? 8 * T : 0), n, T);
            CHECK(pv.T == Tm);
            size_t L = c.num_layers, rows = L * n * c.num_heads * Tm, BTC = (size_t)n * Tm * c.channels;
            CHECK(memcmp(kept[i].att, pv.att, rows * Tm * sizeof(float)) == 0);
            CHECK((pv.att_slot == nullptr) == (kept[i].att_slot == nullptr));
            if (pv.att_slot) CHECK(memcmp(kept[i].att_slot, pv.att_slot, rows * sizeof(float)) == 0);
            CHECK(memcmp(kept[i].encoded, pv.encoded, BTC * sizeof(float)) == 0);
            CHECK(memcmp(kept[i].residual, pv.residual, L * BTC * sizeof(float)) == 0);
            CHECK(memcmp(kept[i].qkv, pv.qkv, 3 * L * BTC * sizeof(float)) == 0);
            CHECK((size_t)(kept[i].qkv + 3 * L * BTC - kept[i].att) == (i ? second : first));
        }
        CHECK(kept[1].att == kept[0].qkv + 3 * (size_t)c.num_layers * 8 * Tm * c.channels);
        e.probe(probe.data(), 8, T, true);  // a new series: one probe of 8 fits, a second one not
        CHECK_THROWS_WITH(e.probe(probe.data(), 8, T, true), Catch::Contains("internal: the probe's copies need"));
        e.probe_send();
        CHECK(e.probe(probe.data(), 3, T, true).att == kept[0].att);
    }
}

// The number after "key": in one JSON line.
static double json_field(const std::string& line, const std::string& key) {
    size_t at = line.find("\"" + key + "\":");
    REQUIRE(at != std::string::npos);
    return strtod(line.c_str() + at + key.size() + 3, nullptr);
}

TEST_CASE("every variant trains from the command line: finite, below its starting loss, the right metric", "[variants][train]") {
    for (const VariantCase& vc : all_variants()) {
        TinyRun r = tiny_run(24);
        r.cl.model.attn = vc.spec;
        r.cl.train.seq_len = 12;
        r.cl.train.probe_len = 12;
        r.cl.train.total_batch_size = 96;
        r.cl.train.sink_every = 24;
        r.cl.train.val_every = 24;
        INFO(vc.name << " (" << attn_variant_names[vc.spec.variant] << ", norm " << attn_normaliser_names[vc.spec.normaliser]
             << ", phi " << attn_phi_names[vc.spec.phi] << ")");
        REQUIRE(train(&r.cl) == 0);
        std::string log = slurp(r.dir + "/run/log.jsonl");
        std::vector<double> losses;
        std::string sink_line;
        size_t pos = 0;
        while (pos < log.size()) {
            size_t end = log.find('\n', pos);
            std::string line = log.substr(pos, end - pos);
            if (line.find("\"type\":\"train\"") != std::string::npos) losses.push_back(json_field(line, "loss"));
            if (line.find("\"type\":\"sink\"") != std::string::npos) sink_line = line;
            pos = end + 1;
        }
        REQUIRE(losses.size() == 24);
        for (double l : losses) REQUIRE(std::isfinite(l));
        double first = (losses[0] + losses[1] + losses[2]) / 3, last = (losses[21] + losses[22] + losses[23]) / 3;
        CHECK(last < first - 0.2);
        bool slot = vc.spec.slot != SLOT_NONE || vc.spec.sink_token;
        CHECK((sink_line.find("\"sink_star\"") != std::string::npos) == slot);
        CHECK((sink_line.find("\"proxy\":true") != std::string::npos) == !attn_is_probability(vc.spec));
    }
}

TEST_CASE("data manipulations: fixed token, random positions, and they reach the targets too", "[variants][data]") {
    TrainConfig tc;
    tc.fixed_token = 7;
    tc.fixed_pos = 2;
    tc.random_from = 4;
    tc.random_to = 6;
    const int B = 3, T = 8, V = 50;
    std::vector<int> x(B * T), y(B * T);
    for (int i = 0; i < B * T; i++) { x[i] = 1; y[i] = 1; }
    uint64_t rng = 5, rng_again = 5;
    apply_data_manipulations(tc, x.data(), y.data(), B, T, V, &rng);
    std::vector<int> x2(B * T, 1);
    apply_data_manipulations(tc, x2.data(), (int*)nullptr, B, T, V, &rng_again);
    CHECK(x == x2);  // the same stream gives the same tokens; targets are optional
    CHECK(rng == rng_again);
    bool any_differs = false;
    for (int b = 0; b < B; b++) {
        CHECK(x[b * T + 2] == 7);
        CHECK(y[b * T + 1] == 7);  // the target of position 1 is the token at position 2
        for (int t = 4; t < 6; t++) {
            CHECK(x[b * T + t] >= 0);
            CHECK(x[b * T + t] < V);
            CHECK(y[b * T + t - 1] == x[b * T + t]);
            any_differs |= x[b * T + t] != x[4];
        }
        for (int t : {0, 1, 3, 6, 7}) CHECK(x[b * T + t] == 1);
    }
    CHECK(any_differs);
    CHECK_THROWS_WITH(validate_data_manipulations(tc, 5, T, "--seq-len"), Catch::Contains("--fixed-token"));
    tc.fixed_pos = 8;
    CHECK_THROWS_WITH(validate_data_manipulations(tc, V, T, "--seq-len"), Catch::Contains("--fixed-pos"));
    tc.fixed_pos = 0;
    tc.random_to = 9;
    CHECK_THROWS_WITH(validate_data_manipulations(tc, V, T, "--seq-len"), Catch::Contains("--random-to"));
}

TEST_CASE("data-manipulation flags run end to end and are logged", "[variants][data]") {
    TinyRun r = tiny_run(6);
    r.cl.train.fixed_token = 31;
    r.cl.train.fixed_pos = 0;
    r.cl.train.data_fraction = 0.1f;
    REQUIRE(train(&r.cl) == 0);
    std::string log = slurp(r.dir + "/run/log.jsonl");
    CHECK(log.find("\"fixed-token\":31") != std::string::npos);
    CHECK(log.find("\"data-fraction\":0.1") != std::string::npos);
}

TEST_CASE("text generation is reproducible under a seed and decodes through the byte vocabulary", "[sampling]") {
    TinyRun r = tiny_run(3);
    r.cl.model.vocab_size = 256;
    config_finalize(&r.cl.model);
    r.cl.train.sample_len = 12;
    r.cl.train.sample_every = 3;
    r.cl.train.prompt = "ab";
    REQUIRE(train(&r.cl) == 0);
    std::string log = slurp(r.dir + "/run/log.jsonl");
    size_t at = log.find("\"type\":\"sample\",\"step\":3");
    REQUIRE(at != std::string::npos);
    std::unique_ptr<Engine> m = load_engine(r.dir + "/run/model_00000003.bin");
    TextCodec codec;
    text_codec_open(&codec, "", 256, "", GPT2_BPE_DIR);
    REQUIRE(codec.available);
    CHECK(text_encode(&codec, "ab") == std::vector<int>({'a', 'b'}));
    std::string one = sample_text(*m, &codec, r.cl.train, 3), two = sample_text(*m, &codec, r.cl.train, 3);
    CHECK(one == two);
    CHECK(one.size() == 12);  // one byte per token
    CHECK(log.find("\"text\":\"" + json_escape(one) + "\"") != std::string::npos);  // the run logged the same text
    CHECK(sample_text(*m, &codec, r.cl.train, 4) != one);  // another step, another stream
    // greedy decoding is the argmax at every step
    TrainConfig greedy = r.cl.train;
    greedy.temperature = 0;
    std::vector<int> ids = {'a', 'b'};
    uint64_t rng = 1;
    std::vector<int> out = generate(*m, ids, 3, 0.0f, 0, 256, &rng);
    m->forward(ids.data(), (const int*)nullptr, 1, 2);
    std::vector<float> row(256);
    m->logits_row(0, 1, row.data());
    CHECK(out[0] == (int)(std::max_element(row.begin(), row.end()) - row.begin()));
}

TEST_CASE("masks in the metric: alpha_k averages over the queries that see key k", "[variants][sink]") {
    // window w = 2 over T = 4: key 0 is seen by queries 0 and 1 only
    const int T = 4;
    double A[T * T] = {1, 0, 0, 0,
                       0.8, 0.2, 0, 0,
                       0, 0.5, 0.5, 0,
                       0, 0, 0.5, 0.5};
    int lo[T] = {0, 0, 1, 2}, hi[T] = {1, 2, 3, 4};
    SinkVisibility v;
    v.lo = lo;
    v.hi = hi;
    double alpha[SINK_MAX_K];
    sink_alpha(A, T, SINK_MAX_K, alpha, v);
    CHECK(alpha[0] == Approx((1 + 0.8) / 2).epsilon(1e-15));  // not (1 + 0.8 + 0 + 0) / 4
    CHECK(alpha[1] == Approx((0.2 + 0.5) / 2).epsilon(1e-15));
    CHECK(sink_row_entropy(A, T, 1, v) == Approx((-(0.8 * log(0.8) + 0.2 * log(0.2)) / log(2.0) + 1 + 1) / 3).epsilon(1e-12));
    // a slot at index 0 is visible from every row even when the window has moved on
    v.slot0 = true;
    CHECK(sink_visible(v, 3, 0));
    CHECK(!sink_visible(v, 3, 1));
}

TEST_CASE("ALiBi penalises distance in both directions inside a bidirectional prefix", "[variants]") {
    const int B = 1, T = 4, C = 4, NH = 1;
    std::vector<double> qkv(B * T * 3 * C, 0.0), out(B * T * C), att(B * NH * T * T), work(3 * B * NH * T * (T + 1));
    float slope[1] = {1.0f};
    AttnSpec spec;
    spec.mask = MASK_PREFIX;
    spec.mask_param = 3;
    AttnParams<double> ap{spec, slope, nullptr, nullptr, nullptr, nullptr, 0};
    attention_forward(out.data(), att.data(), (double*)nullptr, work.data(), qkv.data(), qkv.data() + C, 3 * C,
                      qkv.data() + 2 * C, ap, B, T, C, NH);
    // q = k = 0: row 0 of the prefix sees keys 0..2 with scores 0, -1, -2
    double z = 1 + exp(-1.0) + exp(-2.0);
    CHECK(att[0] == Approx(1 / z).epsilon(1e-12));
    CHECK(att[2] == Approx(exp(-2.0) / z).epsilon(1e-12));
    CHECK(att[0] > att[1]);
}

TEST_CASE("variant flags that cannot work are refused up front", "[variants]") {
    TinyRun r = tiny_run(2);
    r.cl.model.attn.mask = MASK_PREFIX;
    r.cl.model.attn.mask_param = 17;  // T = 16: no position would have a loss
    CHECK_THROWS_WITH(train(&r.cl), Catch::Contains("--mask-param"));
    TinyRun p = tiny_run(2);
    p.cl.model.vocab_size = 256;
    config_finalize(&p.cl.model);
    p.cl.train.prompt = std::string(20, 'x');  // maxT 16
    CHECK_THROWS_WITH(train(&p.cl), Catch::Contains("--prompt"));
    CHECK(slurp(p.dir + "/run/log.jsonl").empty());  // refused before the run starts
    TrainConfig tc;
    tc.fixed_token = 1;
    tc.fixed_pos = 3;
    tc.random_from = 2;
    tc.random_to = 5;
    CHECK_THROWS_WITH(validate_data_manipulations(tc, 32, 16, "--seq-len"), Catch::Contains("overlap"));
}

TEST_CASE("the clipped softmax keeps the training length's gamma for other lengths", "[variants]") {
    TinyRun r = tiny_run(2);
    r.cl.model.attn.variant = ATTN_CLIPPED;
    REQUIRE(train(&r.cl) == 0);
    std::vector<float> params;
    ModelConfig c = read_model_file(r.dir + "/run/model_00000002.bin", &params);
    CHECK(c.attn.clip_len == 16);  // stored in the file (header [33])
    CHECK(attn_clip_gamma<double>(c.attn, 3) == Approx(-4.0 / 16));
}
