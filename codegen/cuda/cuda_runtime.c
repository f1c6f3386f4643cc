/* cnncc CUDA bundle runtime: the C API of a deployed CUDA model, on the CUDA driver API (link with -lcuda).
 *
 * Not compiled on its own: the generated <name>_plan.c defines the model's configuration macros and its launch
 * plan as static tables, then includes this file (see codegen/cuda/bundle.py). The public functions are declared,
 * and documented, in the generated <name>.h:
 *
 *   <name>_create(path, &model)  path: the bundle directory, or the weights file (the fat binary <name>.fatbin is
 *                                read from the same directory). Reads and checks both files, opens GPU 0's primary
 *                                context (CUDA_VISIBLE_DEVICES selects it), loads the module, allocates the weights
 *                                region (copied once) and the arena.
 *   <name>_run(...)              copies the inputs into their arena slots, replays the launches on the model's
 *                                stream (as a CUDA graph captured by the first call when CNNCC_USE_GRAPHS is 1),
 *                                copies the outputs back and waits.
 *   <name>_destroy(model)        frees the device memory and releases the context.
 *
 * Contract: no function crashes on bad arguments; every failure returns a status code and <name>_last_error()
 * gives the text. A missing driver or GPU is CNNCC_ERR_CPU (no usable device), device memory exhaustion
 * CNNCC_ERR_NOMEM, any other driver failure CNNCC_ERR_INTERNAL naming the call.
 *
 * Weights file (little-endian; written by cnncc.bundle_format.write_weights):
 *   0  char[8]  magic "CNNCCWT\0"       8  u32 format version (1)     12 u32 header bytes (128)
 *   16 char[64] graph hash (hex)        80 u64 payload bytes           88 u32 CRC-32 of the payload
 *   92 u32 CRC-32 of bytes 0..91        96..127 zero (checked)          128 payload (the weights blob)
 *
 * Tables the plan defines before including this file:
 *   KERNEL_NAMES[k]                 kernel symbols in the fat binary
 *   LAUNCHES[i][10]                 kernel index, grid x y z, block x y z, static shared bytes, first arg, arg count
 *   ARGS[j][2]                      region (0: weights, 1: arena), byte offset
 *   INPUT_NAMES, OUTPUT_NAMES       tensor names
 *   INPUTS[i][5], OUTPUTS[i][5]     element bytes, batched, elements (per image if batched), classes, arena offset
 */
#define _GNU_SOURCE
#include <cuda.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include CNNCC_PUBLIC_HEADER

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define API(fn) CAT(CNNCC_NAME, CAT(_, fn))
#define MODEL struct CAT(CNNCC_NAME, _model)

#define WEIGHTS_MAGIC "CNNCCWT"
#define WEIGHTS_VERSION 1u
#define WEIGHTS_HEADER 128u
#define MIN_ALLOC 256u
#define NUM_ARGS (sizeof ARGS / sizeof ARGS[0])
#define NUM_KERNELS (sizeof KERNEL_NAMES / sizeof KERNEL_NAMES[0])

#ifndef CNNCC_USE_GRAPHS
#define CNNCC_USE_GRAPHS 1
#endif

MODEL {
    CUdevice device;
    CUcontext ctx;          /* the device's primary context (retained) */
    CUstream stream;
    CUmodule module;
    CUfunction functions[NUM_KERNELS];
    CUdeviceptr weights, arena;
    CUdeviceptr values[NUM_ARGS];   /* every kernel argument: region base + offset */
    void *params[NUM_ARGS];         /* pointers to values[]: launch i uses params + LAUNCHES[i][8] */
    CUgraphExec graph;
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

static int cu_fail(CUresult r, const char *call) {
    const char *name = NULL, *text = NULL;
    if (cuGetErrorName(r, &name) != CUDA_SUCCESS) name = "unknown CUresult";
    if (cuGetErrorString(r, &text) != CUDA_SUCCESS) text = "";
    int code = CNNCC_ERR_INTERNAL;
    if (r == CUDA_ERROR_OUT_OF_MEMORY) code = CNNCC_ERR_NOMEM;
    if (r == CUDA_ERROR_NO_DEVICE || r == CUDA_ERROR_STUB_LIBRARY || r == CUDA_ERROR_SYSTEM_DRIVER_MISMATCH ||
        r == CUDA_ERROR_NO_BINARY_FOR_GPU || r == CUDA_ERROR_NOT_INITIALIZED)
        code = CNNCC_ERR_CPU;
    return fail(code, "%s%s failed: %s (%d: %s)", code == CNNCC_ERR_CPU ? "no usable CUDA device: " : "", call,
                name, (int)r, text);
}

#define CU(call)                                          \
    do {                                                  \
        CUresult r_ = (call);                             \
        if (r_ != CUDA_SUCCESS) return cu_fail(r_, #call); \
    } while (0)

const char *API(last_error)(void) { return last_error[0] ? last_error : "no error"; }

const char *API(graph_hash)(void) { return CNNCC_GRAPH_HASH; }

/* ---- files ------------------------------------------------------------------------------------------------- */

static uint32_t crc32_bytes(const unsigned char *p, size_t n) {
    static uint32_t table[256];
    static int ready;
    if (!ready) {
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t v = i;
            for (int k = 0; k < 8; ++k) v = (v >> 1) ^ (0xEDB88320u & (0u - (v & 1u)));
            table[i] = v;
        }
        ready = 1;
    }
    uint32_t crc = ~0u;
    while (n--) crc = (crc >> 8) ^ table[(crc ^ *p++) & 0xFF];
    return ~crc;
}

static uint32_t get32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* The whole file in a malloc'ed buffer (freed by the caller). */
static int read_file(const char *path, const char *what, unsigned char **data, size_t *size) {
    *data = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return fail(CNNCC_ERR_IO, "cannot open %s '%s'", what, path);
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return fail(CNNCC_ERR_IO, "cannot read %s '%s'", what, path);
    }
    unsigned char *buf = malloc((size_t)n + 1);
    if (!buf) {
        fclose(f);
        return fail(CNNCC_ERR_NOMEM, "cannot allocate %ld bytes for %s '%s'", n, what, path);
    }
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) {
        free(buf);
        return fail(CNNCC_ERR_IO, "cannot read %s '%s' (%zu of %ld bytes)", what, path, got, n);
    }
    *data = buf;
    *size = got;
    return CNNCC_OK;
}

static int check_weights(const char *path, const unsigned char *h, size_t size) {
    if (size < WEIGHTS_HEADER)
        return fail(CNNCC_ERR_FORMAT, "weights file '%s' is truncated: %zu bytes, shorter than the %u-byte header",
                    path, size, WEIGHTS_HEADER);
    static const unsigned char zeros[WEIGHTS_HEADER - 96];
    if (memcmp(h, WEIGHTS_MAGIC, 8) != 0)
        return fail(CNNCC_ERR_FORMAT, "'%s' is not a cnncc weights file (bad magic)", path);
    if (get32(h + 92) != crc32_bytes(h, 92))
        return fail(CNNCC_ERR_CHECKSUM, "weights file '%s': the header fails its CRC-32 (the file was altered)",
                    path);
    if (memcmp(h + 96, zeros, sizeof zeros) != 0)
        return fail(CNNCC_ERR_FORMAT, "weights file '%s': the reserved header bytes 96..127 are not zero", path);
    if (get32(h + 8) != WEIGHTS_VERSION || get32(h + 12) != WEIGHTS_HEADER)
        return fail(CNNCC_ERR_FORMAT, "weights file '%s' has format version %u (header %u bytes); this bundle "
                    "reads version %u", path, get32(h + 8), get32(h + 12), WEIGHTS_VERSION);
    if (memcmp(h + 16, CNNCC_GRAPH_HASH, 64) != 0)
        return fail(CNNCC_ERR_MISMATCH, "weights file '%s' belongs to graph %.12s..., this bundle is graph %.12s...",
                    path, (const char *)(h + 16), CNNCC_GRAPH_HASH);
    if (get64(h + 80) != (uint64_t)CNNCC_WEIGHTS_BYTES)
        return fail(CNNCC_ERR_MISMATCH, "weights file '%s' holds %llu bytes of weights; this bundle needs %llu",
                    path, (unsigned long long)get64(h + 80), (unsigned long long)CNNCC_WEIGHTS_BYTES);
    if (size != WEIGHTS_HEADER + (size_t)CNNCC_WEIGHTS_BYTES)
        return fail(CNNCC_ERR_FORMAT, "weights file '%s' has %zu payload bytes; its header says %llu", path,
                    size - WEIGHTS_HEADER, (unsigned long long)CNNCC_WEIGHTS_BYTES);
    if (get32(h + 88) != crc32_bytes(h + WEIGHTS_HEADER, size - WEIGHTS_HEADER))
        return fail(CNNCC_ERR_CHECKSUM, "weights file '%s': the payload fails its CRC-32 (the file was altered)",
                    path);
    return CNNCC_OK;
}

/* The weights file and fat binary paths from a bundle directory or a weights file path (malloc'ed). */
static int bundle_paths(const char *path, char **weights, char **fatbin) {
    struct stat st;
    size_t n = strlen(path), extra = strlen(CNNCC_NAME_STR) + 16;
    *weights = malloc(n + extra);
    *fatbin = malloc(n + extra);
    if (!*weights || !*fatbin) return fail(CNNCC_ERR_NOMEM, "cannot allocate the file names");
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(*weights, n + extra, "%s/%s.weights", path, CNNCC_NAME_STR);
        snprintf(*fatbin, n + extra, "%s/%s.fatbin", path, CNNCC_NAME_STR);
        return CNNCC_OK;
    }
    const char *slash = strrchr(path, '/');
    int dir = slash ? (int)(slash - path) : 1;
    snprintf(*weights, n + extra, "%s", path);
    snprintf(*fatbin, n + extra, "%.*s/%s.fatbin", dir, slash ? path : ".", CNNCC_NAME_STR);
    return CNNCC_OK;
}

/* ---- device ------------------------------------------------------------------------------------------------ */

static int open_device(MODEL *m) {
    CUresult r = cuInit(0);
    if (r != CUDA_SUCCESS) return cu_fail(r, "cuInit(0)");
    int count = 0;
    CU(cuDeviceGetCount(&count));
    if (count < 1)
        return fail(CNNCC_ERR_CPU, "no usable CUDA device: the driver reports 0 devices");
    CU(cuDeviceGet(&m->device, 0));
    int major = 0, minor = 0;
    CU(cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, m->device));
    CU(cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, m->device));
    if (10 * major + minor < CNNCC_ARCH_NUMBER)
        return fail(CNNCC_ERR_CPU, "compiled for %s, but device 0 is sm_%d%d", CNNCC_ARCH, major, minor);
    CU(cuDevicePrimaryCtxRetain(&m->ctx, m->device));
    CU(cuCtxSetCurrent(m->ctx));
    CU(cuStreamCreate(&m->stream, CU_STREAM_NON_BLOCKING));
    return CNNCC_OK;
}

static int load_model(MODEL *m, const unsigned char *fatbin, const unsigned char *weights) {
    CU(cuModuleLoadData(&m->module, fatbin));
    for (size_t k = 0; k < NUM_KERNELS && CNNCC_NUM_LAUNCHES; ++k)
        CU(cuModuleGetFunction(&m->functions[k], m->module, KERNEL_NAMES[k]));
    size_t wbytes = (size_t)CNNCC_WEIGHTS_BYTES > MIN_ALLOC ? (size_t)CNNCC_WEIGHTS_BYTES : MIN_ALLOC;
    size_t abytes = (size_t)CNNCC_ARENA_BYTES > MIN_ALLOC ? (size_t)CNNCC_ARENA_BYTES : MIN_ALLOC;
    CU(cuMemAlloc(&m->weights, wbytes));
    CU(cuMemAlloc(&m->arena, abytes));
    CU(cuMemsetD8(m->arena, 0, abytes));
    if (CNNCC_WEIGHTS_BYTES) CU(cuMemcpyHtoD(m->weights, weights, (size_t)CNNCC_WEIGHTS_BYTES));
    for (size_t j = 0; j < NUM_ARGS; ++j) {
        m->values[j] = (ARGS[j][0] ? m->arena : m->weights) + (CUdeviceptr)ARGS[j][1];
        m->params[j] = &m->values[j];
    }
    return CNNCC_OK;
}

void API(destroy)(MODEL *model) {
    if (!model) return;
    if (model->ctx) {
        cuCtxSetCurrent(model->ctx);
        if (model->stream) cuStreamSynchronize(model->stream);
        if (model->graph) cuGraphExecDestroy(model->graph);
        if (model->arena) cuMemFree(model->arena);
        if (model->weights) cuMemFree(model->weights);
        if (model->module) cuModuleUnload(model->module);
        if (model->stream) cuStreamDestroy(model->stream);
        cuDevicePrimaryCtxRelease(model->device);
    }
    free(model);
}

int API(create)(const char *path, MODEL **out) {
    if (!out) return fail(CNNCC_ERR_NULL, "create: the model pointer (out) must not be NULL");
    *out = NULL;
    if (!path) return fail(CNNCC_ERR_NULL, "create: pass the bundle directory or the path of %s.weights",
                           CNNCC_NAME_STR);
    char *wpath = NULL, *fpath = NULL;
    unsigned char *wdata = NULL, *fdata = NULL;
    size_t wsize = 0, fsize = 0;
    MODEL *m = NULL;
    int code = bundle_paths(path, &wpath, &fpath);
    if (code == CNNCC_OK) code = read_file(wpath, "weights file", &wdata, &wsize);
    if (code == CNNCC_OK) code = check_weights(wpath, wdata, wsize);
    if (code == CNNCC_OK) code = read_file(fpath, "fat binary", &fdata, &fsize);
    if (code == CNNCC_OK && !(m = calloc(1, sizeof *m))) code = fail(CNNCC_ERR_NOMEM, "cannot allocate the model");
    if (code == CNNCC_OK) code = open_device(m);
    if (code == CNNCC_OK) code = load_model(m, fdata, wdata + WEIGHTS_HEADER);
    free(wpath);
    free(fpath);
    free(wdata);
    free(fdata);
    if (code != CNNCC_OK) {
        API(destroy)(m);
        return code;
    }
    *out = m;
    return ok();
}

/* ---- run --------------------------------------------------------------------------------------------------- */

static int check_io(const char *kind, const char *const *names, const int64_t (*spec)[5], int count, int64_t batch,
                    const void *const *ptrs, const size_t *bytes) {
    if (!ptrs || !bytes) return fail(CNNCC_ERR_NULL, "run: the %s pointer and size arrays must not be NULL", kind);
    for (int i = 0; i < count; ++i) {
        const int64_t *s = spec[i];
        uint64_t want = (uint64_t)s[0] * (uint64_t)s[2] * (uint64_t)(s[1] ? batch : 1);
        if (!ptrs[i]) return fail(CNNCC_ERR_NULL, "run: %s %d ('%s') is NULL", kind, i, names[i]);
        if (bytes[i] != want)
            return fail(CNNCC_ERR_SIZE, "run: %s %d ('%s') has %zu bytes; at batch %lld it takes %llu", kind, i,
                        names[i], bytes[i], (long long)batch, (unsigned long long)want);
        if (s[3] > 0) {
            const int64_t *labels = ptrs[i];
            for (int64_t k = 0; k < (int64_t)(want / 8); ++k)
                if (labels[k] < 0 || labels[k] >= s[3])
                    return fail(CNNCC_ERR_VALUE, "run: %s '%s': class labels must lie in [0, %lld), element %lld "
                                "is %lld", kind, names[i], (long long)s[3], (long long)k, (long long)labels[k]);
        }
    }
    return CNNCC_OK;
}

static int launch_all(MODEL *m) {
    for (int i = 0; i < CNNCC_NUM_LAUNCHES; ++i) {
        const uint32_t *l = LAUNCHES[i];
        CU(cuLaunchKernel(m->functions[l[0]], l[1], l[2], l[3], l[4], l[5], l[6], 0, m->stream, &m->params[l[8]],
                          NULL));
    }
    return CNNCC_OK;
}

static int capture(MODEL *m) {
    CUgraph graph = NULL;
    CU(cuStreamBeginCapture(m->stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL));
    int code = launch_all(m);
    CUresult r = cuStreamEndCapture(m->stream, &graph);
    if (code == CNNCC_OK && r != CUDA_SUCCESS) code = cu_fail(r, "cuStreamEndCapture");
    if (code == CNNCC_OK) {
        r = cuGraphInstantiate(&m->graph, graph, 0);
        if (r != CUDA_SUCCESS) code = cu_fail(r, "cuGraphInstantiate");
    }
    if (graph) cuGraphDestroy(graph);
    return code;
}

static int enqueue(MODEL *m) {
    if (!CNNCC_USE_GRAPHS || CNNCC_NUM_LAUNCHES == 0) return launch_all(m);
    if (!m->graph) {
        int code = capture(m);
        if (code != CNNCC_OK) return code;
    }
    CU(cuGraphLaunch(m->graph, m->stream));
    return CNNCC_OK;
}

int API(run)(MODEL *model, int64_t batch, const void *const *inputs, const size_t *input_bytes,
             void *const *outputs, const size_t *output_bytes) {
    if (!model) return fail(CNNCC_ERR_NULL, "run: model is NULL (create failed?)");
    if (batch < 1 || batch > CNNCC_MAX_BATCH)
        return fail(CNNCC_ERR_ARGUMENT, "run: batch %lld is outside 1..%d (the compiled maximum)", (long long)batch,
                    CNNCC_MAX_BATCH);
    int code = check_io("input", INPUT_NAMES, INPUTS, CNNCC_NUM_INPUTS, batch, inputs, input_bytes);
    if (code == CNNCC_OK)
        code = check_io("output", OUTPUT_NAMES, OUTPUTS, CNNCC_NUM_OUTPUTS, batch, (const void *const *)outputs,
                        output_bytes);
    if (code != CNNCC_OK) return code;
    CU(cuCtxSetCurrent(model->ctx));
    for (int i = 0; i < CNNCC_NUM_INPUTS; ++i)
        CU(cuMemcpyHtoDAsync(model->arena + (CUdeviceptr)INPUTS[i][4], inputs[i], input_bytes[i], model->stream));
    code = enqueue(model);
    if (code != CNNCC_OK) return code;
    for (int i = 0; i < CNNCC_NUM_OUTPUTS; ++i)
        CU(cuMemcpyDtoHAsync(outputs[i], model->arena + (CUdeviceptr)OUTPUTS[i][4], output_bytes[i],
                             model->stream));
    CU(cuStreamSynchronize(model->stream));
    return ok();
}
