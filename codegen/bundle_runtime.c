/* cnncc bundle runtime: the C API of a deployed model around its compiled entry point.
 *
 * cnncc compiles this file once per bundle, with a generated configuration header (force-included by the build:
 * the model's name, graph hash, tensor specs, arena and weights sizes, required CPU features; see
 * codegen/bundle.py) and links it with the model's object file (the LLVM module the in-process runtime runs) into
 * lib<name>.so / lib<name>.a. The public functions are declared, and documented, in the generated <name>.h.
 *
 * Contract: no function crashes on bad arguments. NULL pointers, a batch outside 1..max, buffer sizes that do not
 * match, class labels out of range, a weights file that is missing, truncated, altered or made for another graph,
 * and a CPU without the compiled-for features all return an error code; <name>_last_error() gives the text.
 *
 * Weights file (little-endian; written by cnncc.runtime.bundle.write_weights):
 *   0  char[8]  magic "CNNCCWT\0"       8  u32 format version (1)     12 u32 header bytes (128)
 *   16 char[64] graph hash (hex)        80 u64 payload bytes           88 u32 CRC-32 of the payload
 *   92 u32 CRC-32 of bytes 0..91        96..127 zero (checked)          128 payload (the weights blob)
 * CRC-32 is zlib's (polynomial 0xEDB88320).
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <omp.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include CNNCC_PUBLIC_HEADER

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define API(fn) CAT(CNNCC_NAME, CAT(_, fn))
#define MODEL struct CAT(CNNCC_NAME, _model)

#define ALIGN 64
#define WEIGHTS_MAGIC "CNNCCWT"
#define WEIGHTS_VERSION 1u
#define WEIGHTS_HEADER 128u

/* The model's compiled entry point (the module's cnncc_forward, renamed per bundle). */
extern int32_t CAT(CNNCC_NAME, __forward)(void **inputs, void **outputs, void *arena, const void *weights,
                                          int64_t batch, int32_t nthreads);

typedef struct {
    const char *name;
    int64_t elem_bytes;   /* 4 (float32) or 8 (int64) */
    int64_t batched;      /* 1: the first axis is the call's batch */
    int64_t elems;        /* per image when batched, else in all */
    int64_t classes;      /* > 0: an int64 class-label input whose values must lie in [0, classes) */
} io_spec;

typedef struct {
    const char *name;
    uint32_t leaf, subleaf, reg, bit;
} cpu_feature;

static const io_spec INPUTS[] = {CNNCC_INPUT_SPECS};
static const io_spec OUTPUTS[] = {CNNCC_OUTPUT_SPECS};
static const cpu_feature FEATURES[] = {CNNCC_FEATURE_TABLE {NULL, 0, 0, 0, 0}};
static const char *const REQUIRED[] = {CNNCC_REQUIRED_FEATURES NULL};

#if CNNCC_EMBEDDED
extern const unsigned char CAT(CNNCC_NAME, __weights)[];
#endif

MODEL {
    void *weights_mem;     /* owned copy of the weights (NULL when running from the embedded, read-only blob) */
    const void *weights;
    void *arena;
    int32_t threads;
};

/* ---- errors ------------------------------------------------------------------------------------------------ */

static __thread char last_error[1024];

static int fail(int code, const char *fmt, ...) {
    va_list ap;
    int n = snprintf(last_error, sizeof last_error, "%s: ", CNNCC_NAME_STR);
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof last_error)
        vsnprintf(last_error + n, sizeof last_error - (size_t)n, fmt, ap);
    va_end(ap);
    return code;
}

static int ok(void) {
    last_error[0] = '\0';
    return CNNCC_OK;
}

const char *API(last_error)(void) { return last_error[0] ? last_error : "no error"; }

const char *API(graph_hash)(void) { return CNNCC_GRAPH_HASH; }

/* ---- CPU features ------------------------------------------------------------------------------------------ */

static int cpuid_bit(const cpu_feature *f) {
    unsigned r[4] = {0, 0, 0, 0};
    unsigned top = __get_cpuid_max(f->leaf & 0x80000000u, NULL);
    if (top < f->leaf || !__get_cpuid_count(f->leaf, f->subleaf, &r[0], &r[1], &r[2], &r[3]))
        return 0;
    return (int)((r[f->reg] >> f->bit) & 1u);
}

static uint64_t xcr0(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27)))  /* OSXSAVE: XGETBV is usable */
        return 0;
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

int API(host_has_feature)(const char *name) {
    if (!name) return -1;
    for (const cpu_feature *f = FEATURES; f->name; ++f)
        if (strcmp(f->name, name) == 0) return cpuid_bit(f);
    return -1;
}

int API(check_cpu)(void) {
    char missing[512] = "";
    size_t used = 0;
    for (const char *const *r = REQUIRED; *r; ++r) {
        if (API(host_has_feature)(*r) != 0) continue;  /* present (1); names without a CPUID bit are not listed */
        int n = snprintf(missing + used, sizeof missing - used, "%s%s", used ? ", " : "", *r);
        if (n > 0 && used + (size_t)n < sizeof missing) used += (size_t)n;
    }
    if (used)
        return fail(CNNCC_ERR_CPU, "compiled for CPU '%s', but this CPU lacks: %s (compile the model with "
                    "`cnncc compile --cpu x86-64-v3` for any AVX2 machine)", CNNCC_TARGET_CPU, missing);
    uint64_t need = CNNCC_XCR0_MASK;
    if (need && (xcr0() & need) != need)
        return fail(CNNCC_ERR_CPU, "compiled for CPU '%s', whose vector registers the operating system does not "
                    "enable (XCR0 = 0x%llx, needs 0x%llx)", CNNCC_TARGET_CPU, (unsigned long long)xcr0(),
                    (unsigned long long)need);
    return ok();
}

/* ---- threads ----------------------------------------------------------------------------------------------- */

/* Pin the worker threads (1..n-1) of libgomp's team for the calling thread to distinct CPUs of the process's
 * affinity set, once per team size: otherwise the scheduler moves them between parallel regions and a kernel reads
 * its input from the other core's cache (measured: up to 10x slower kernels). The calling thread is left alone. */
static void pin_workers(int n) {
    static __thread int pinned;
    if (n <= 1 || pinned == n) return;
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
    int cpus[CPU_SETSIZE], count = 0;
    for (int i = 0; i < CPU_SETSIZE; ++i)
        if (CPU_ISSET(i, &allowed)) cpus[count++] = i;
    if (count == 0) return;
#pragma omp parallel num_threads(n)
    {
        int t = omp_get_thread_num();
        if (t > 0) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpus[t % count], &one);
            sched_setaffinity(0, sizeof one, &one);
        }
    }
    pinned = n;
}

/* ---- weights file ------------------------------------------------------------------------------------------ */

typedef struct {
    uint32_t t[8][256];
} crc_tables;

static void crc_init(crc_tables *c) {
    for (uint32_t i = 0; i < 256; ++i) {
        uint32_t v = i;
        for (int k = 0; k < 8; ++k) v = (v >> 1) ^ (0xEDB88320u & (0u - (v & 1u)));
        c->t[0][i] = v;
    }
    for (uint32_t i = 0; i < 256; ++i)
        for (int k = 1; k < 8; ++k) c->t[k][i] = (c->t[k - 1][i] >> 8) ^ c->t[0][c->t[k - 1][i] & 0xFF];
}

/* zlib's CRC-32, continued over p[0..n): start from 0; slicing-by-8. */
static uint32_t crc_update(const crc_tables *c, uint32_t crc, const unsigned char *p, size_t n) {
    crc = ~crc;
    for (; n >= 8; n -= 8, p += 8) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
        lo ^= crc;
        crc = c->t[7][lo & 0xFF] ^ c->t[6][(lo >> 8) & 0xFF] ^ c->t[5][(lo >> 16) & 0xFF] ^ c->t[4][lo >> 24] ^
              c->t[3][hi & 0xFF] ^ c->t[2][(hi >> 8) & 0xFF] ^ c->t[1][(hi >> 16) & 0xFF] ^ c->t[0][hi >> 24];
    }
    while (n--) crc = (crc >> 8) ^ c->t[0][(crc ^ *p++) & 0xFF];
    return ~crc;
}

static uint32_t crc32_bytes(const unsigned char *p, size_t n) {
    crc_tables c;
    crc_init(&c);
    return crc_update(&c, 0, p, n);
}

static uint32_t get32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static void *aligned_zeroed(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, ALIGN, bytes ? bytes : ALIGN) != 0) return NULL;
    memset(p, 0, bytes ? bytes : ALIGN);
    return p;
}

static int read_weights(const char *path, void **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return fail(CNNCC_ERR_IO, "cannot open weights file '%s'", path);
    unsigned char h[WEIGHTS_HEADER];
    size_t got = fread(h, 1, sizeof h, f);
    if (got < sizeof h) {
        fclose(f);
        return fail(CNNCC_ERR_FORMAT, "weights file '%s' is truncated: %zu bytes, shorter than the %u-byte header",
                    path, got, WEIGHTS_HEADER);
    }
    int code = CNNCC_OK;
    if (memcmp(h, WEIGHTS_MAGIC, 8) != 0)
        code = fail(CNNCC_ERR_FORMAT, "'%s' is not a cnncc weights file (bad magic)", path);
    else if (get32(h + 92) != crc32_bytes(h, 92))
        code = fail(CNNCC_ERR_CHECKSUM, "weights file '%s': the header fails its CRC-32 (the file was altered)",
                    path);
    else if (memcmp(h + 96, (const unsigned char[WEIGHTS_HEADER - 96]){0}, WEIGHTS_HEADER - 96) != 0)
        code = fail(CNNCC_ERR_FORMAT, "weights file '%s': the reserved header bytes 96..127 are not zero", path);
    else if (get32(h + 8) != WEIGHTS_VERSION || get32(h + 12) != WEIGHTS_HEADER)
        code = fail(CNNCC_ERR_FORMAT, "weights file '%s' has format version %u (header %u bytes); this bundle "
                    "reads version %u", path, get32(h + 8), get32(h + 12), WEIGHTS_VERSION);
    else if (memcmp(h + 16, CNNCC_GRAPH_HASH, 64) != 0)
        code = fail(CNNCC_ERR_MISMATCH, "weights file '%s' belongs to graph %.12s..., this bundle is graph %.12s...",
                    path, (const char *)(h + 16), CNNCC_GRAPH_HASH);
    else if (get64(h + 80) != (uint64_t)CNNCC_WEIGHTS_BYTES)
        code = fail(CNNCC_ERR_MISMATCH, "weights file '%s' holds %llu bytes of weights; this bundle needs %llu",
                    path, (unsigned long long)get64(h + 80), (unsigned long long)CNNCC_WEIGHTS_BYTES);
    if (code != CNNCC_OK) {
        fclose(f);
        return code;
    }
    unsigned char *w = NULL;
    if (posix_memalign((void **)&w, ALIGN, (size_t)CNNCC_WEIGHTS_BYTES) != 0) {
        fclose(f);
        return fail(CNNCC_ERR_NOMEM, "cannot allocate %llu bytes for the weights",
                    (unsigned long long)CNNCC_WEIGHTS_BYTES);
    }
    /* Read and checksum in chunks, each while it is still in cache. */
    crc_tables tables;
    crc_init(&tables);
    uint32_t crc = 0;
    got = 0;
    for (size_t chunk = 1u << 20; got < (size_t)CNNCC_WEIGHTS_BYTES;) {
        size_t want = (size_t)CNNCC_WEIGHTS_BYTES - got < chunk ? (size_t)CNNCC_WEIGHTS_BYTES - got : chunk;
        size_t n = fread(w + got, 1, want, f);
        crc = crc_update(&tables, crc, w + got, n);
        got += n;
        if (n < want) break;
    }
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (got != (size_t)CNNCC_WEIGHTS_BYTES)
        code = fail(CNNCC_ERR_FORMAT, "weights file '%s' is truncated: %zu of %llu payload bytes", path, got,
                    (unsigned long long)CNNCC_WEIGHTS_BYTES);
    else if (extra)
        code = fail(CNNCC_ERR_FORMAT, "weights file '%s' has bytes after its %llu-byte payload", path,
                    (unsigned long long)CNNCC_WEIGHTS_BYTES);
    else if (crc != get32(h + 88))
        code = fail(CNNCC_ERR_CHECKSUM, "weights file '%s': the payload fails its CRC-32 (the file was altered)",
                    path);
    if (code != CNNCC_OK) {
        free(w);
        return code;
    }
    *out = w;
    return CNNCC_OK;
}

int API(save_weights)(const MODEL *model, const char *path) {
    if (!model || !path) return fail(CNNCC_ERR_NULL, "save_weights: model and path must not be NULL");
    unsigned char h[WEIGHTS_HEADER];
    uint32_t version = WEIGHTS_VERSION, header = WEIGHTS_HEADER;
    uint64_t bytes = (uint64_t)CNNCC_WEIGHTS_BYTES;
    memset(h, 0, sizeof h);
    memcpy(h, WEIGHTS_MAGIC, 8);
    memcpy(h + 8, &version, 4);
    memcpy(h + 12, &header, 4);
    memcpy(h + 16, CNNCC_GRAPH_HASH, 64);
    memcpy(h + 80, &bytes, 8);
    uint32_t crc = crc32_bytes(model->weights, (size_t)bytes);
    memcpy(h + 88, &crc, 4);
    crc = crc32_bytes(h, 92);
    memcpy(h + 92, &crc, 4);
    FILE *f = fopen(path, "wb");
    if (!f) return fail(CNNCC_ERR_IO, "cannot create '%s'", path);
    int good = fwrite(h, 1, sizeof h, f) == sizeof h && fwrite(model->weights, 1, (size_t)bytes, f) == bytes;
    good = (fclose(f) == 0) && good;
    return good ? ok() : fail(CNNCC_ERR_IO, "cannot write '%s'", path);
}

const void *API(weights)(const MODEL *model, size_t *nbytes) {
    if (nbytes) *nbytes = model ? (size_t)CNNCC_WEIGHTS_BYTES : 0;
    return model ? model->weights : NULL;
}

/* ---- create / run / destroy -------------------------------------------------------------------------------- */

void API(destroy)(MODEL *model) {
    if (!model) return;
    free(model->weights_mem);
    free(model->arena);
    free(model);
}

int API(create)(const char *weights_path, int32_t threads, MODEL **out) {
    if (!out) return fail(CNNCC_ERR_NULL, "create: the model pointer (out) must not be NULL");
    *out = NULL;
    int code = API(check_cpu)();
    if (code != CNNCC_OK) return code;
    if (threads < 0) return fail(CNNCC_ERR_ARGUMENT, "create: threads must be >= 0 (0: the default, %d), got %d",
                                 CNNCC_DEFAULT_THREADS, threads);
    MODEL *m = calloc(1, sizeof *m);
    if (!m) return fail(CNNCC_ERR_NOMEM, "cannot allocate the model");
    m->threads = threads ? threads : CNNCC_DEFAULT_THREADS;
    if (weights_path) {
        code = read_weights(weights_path, &m->weights_mem);
        m->weights = m->weights_mem;
    } else {
#if CNNCC_EMBEDDED
        if (CNNCC_TRAINING) {  /* a training step updates the weights in place: work on a copy */
            m->weights_mem = aligned_zeroed((size_t)CNNCC_WEIGHTS_BYTES);
            if (m->weights_mem) memcpy(m->weights_mem, CAT(CNNCC_NAME, __weights), (size_t)CNNCC_WEIGHTS_BYTES);
            else code = fail(CNNCC_ERR_NOMEM, "cannot allocate %llu bytes for the weights",
                             (unsigned long long)CNNCC_WEIGHTS_BYTES);
            m->weights = m->weights_mem;
        } else {
            m->weights = CAT(CNNCC_NAME, __weights);
        }
#else
        code = fail(CNNCC_ERR_NULL, "create: this bundle has no embedded weights; pass the path of %s.weights",
                    CNNCC_NAME_STR);
#endif
    }
    if (code == CNNCC_OK) {
        m->arena = aligned_zeroed((size_t)CNNCC_ARENA_BYTES);
        if (!m->arena) code = fail(CNNCC_ERR_NOMEM, "cannot allocate the %llu-byte arena",
                                   (unsigned long long)CNNCC_ARENA_BYTES);
    }
    if (code != CNNCC_OK) {
        API(destroy)(m);
        return code;
    }
    pin_workers(m->threads);
    *out = m;
    return ok();
}

static int check_io(const char *kind, const io_spec *spec, int count, int64_t batch, const void *const *ptrs,
                    const size_t *bytes) {
    if (!ptrs || !bytes) return fail(CNNCC_ERR_NULL, "run: the %s pointer and size arrays must not be NULL", kind);
    for (int i = 0; i < count; ++i) {
        const io_spec *s = &spec[i];
        uint64_t want = (uint64_t)s->elem_bytes * (uint64_t)s->elems * (uint64_t)(s->batched ? batch : 1);
        if (!ptrs[i]) return fail(CNNCC_ERR_NULL, "run: %s %d ('%s') is NULL", kind, i, s->name);
        if (bytes[i] != want)
            return fail(CNNCC_ERR_SIZE, "run: %s %d ('%s') has %zu bytes; at batch %lld it takes %llu", kind, i,
                        s->name, bytes[i], (long long)batch, (unsigned long long)want);
        if (s->classes > 0) {
            const int64_t *labels = ptrs[i];
            int64_t n = s->elems * (s->batched ? batch : 1);
            for (int64_t k = 0; k < n; ++k)
                if (labels[k] < 0 || labels[k] >= s->classes)
                    return fail(CNNCC_ERR_VALUE, "run: %s '%s': class labels must lie in [0, %lld), element %lld "
                                "is %lld", kind, s->name, (long long)s->classes, (long long)k, (long long)labels[k]);
        }
    }
    return CNNCC_OK;
}

int API(run_with_arena)(const MODEL *model, void *arena, size_t arena_bytes, int64_t batch,
                        const void *const *inputs, const size_t *input_bytes, void *const *outputs,
                        const size_t *output_bytes) {
    if (!model) return fail(CNNCC_ERR_NULL, "run: model is NULL (create failed?)");
    if (!arena) return fail(CNNCC_ERR_NULL, "run: arena is NULL");
    if ((uintptr_t)arena % ALIGN)
        return fail(CNNCC_ERR_ARGUMENT, "run: the arena must be %d-byte aligned (address %p)", ALIGN, arena);
    if (arena_bytes < (size_t)CNNCC_ARENA_BYTES)
        return fail(CNNCC_ERR_ARGUMENT, "run: the arena has %zu bytes; the model needs %llu", arena_bytes,
                    (unsigned long long)CNNCC_ARENA_BYTES);
    if (batch < 1 || batch > CNNCC_MAX_BATCH)
        return fail(CNNCC_ERR_ARGUMENT, "run: batch %lld is outside 1..%d (the compiled maximum)", (long long)batch,
                    CNNCC_MAX_BATCH);
    int code = check_io("input", INPUTS, CNNCC_NUM_INPUTS, batch, inputs, input_bytes);
    if (code == CNNCC_OK)
        code = check_io("output", OUTPUTS, CNNCC_NUM_OUTPUTS, batch, (const void *const *)outputs, output_bytes);
    if (code != CNNCC_OK) return code;
    pin_workers(model->threads);
    int32_t status = CAT(CNNCC_NAME, __forward)((void **)inputs, (void **)outputs, arena, model->weights, batch,
                                                model->threads);
    return status == 0 ? ok() : fail(CNNCC_ERR_INTERNAL, "run: the compiled code returned %d", status);
}

int API(run)(MODEL *model, int64_t batch, const void *const *inputs, const size_t *input_bytes,
             void *const *outputs, const size_t *output_bytes) {
    if (!model) return fail(CNNCC_ERR_NULL, "run: model is NULL (create failed?)");
    return API(run_with_arena)(model, model->arena, (size_t)CNNCC_ARENA_BYTES, batch, inputs, input_bytes, outputs,
                               output_bytes);
}
