/* classify: run a cnncc bundle on an input tensor read from a .npy file and print the top classes. No Python.
 *
 * Make a bundle and build this program against it (DIR holds lib<name>.so, <name>.h, cnncc_bundle.h):
 *
 *     cnncc compile lenet5 -o DIR --max-batch 8
 *     cc -O2 examples/c/classify.c -I DIR -L DIR -llenet5 -Wl,-rpath,DIR -o classify
 *     ./classify -w DIR/lenet5.weights input.npy
 *
 * Options:
 *     -w FILE     the weights file (omit it for a bundle compiled with --embed-weights)
 *     -t N        threads (default: the bundle's)
 *     -k N        classes to print per image (default 5)
 *     -r N        run N more times and print the mean latency (steady state)
 *     -o FILE     write the first output as raw float32 (C order) to FILE
 *
 * INPUT.npy holds float32 in C order, shape (batch, ...) with 1 <= batch <= the bundle's maximum, or one sample
 * without the batch axis. Input sizes are checked by the bundle itself: a tensor of the wrong size comes back as
 * CNNCC_ERR_SIZE with a message, as in any application. Exit status: 0 success, 1 usage, 2 an error the bundle
 * reported, 3 an unreadable input file, 4 out of memory.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cnncc_bundle.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Read a float32, C-order .npy file (format versions 1-3). On success *data (malloc'd) holds *count floats. */
static int read_npy(const char *path, float **data, size_t *count) {
    *data = NULL;
    *count = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "classify: cannot open '%s'\n", path);
        return 3;
    }
    unsigned char magic[8];
    char header[4096];
    size_t header_len = 0;
    int status = 3;
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "\x93NUMPY", 6) != 0) {
        fprintf(stderr, "classify: '%s' is not a .npy file\n", path);
        goto done;
    }
    unsigned char len[4] = {0, 0, 0, 0};
    size_t len_bytes = magic[6] == 1 ? 2 : 4;
    if (fread(len, 1, len_bytes, f) != len_bytes) goto truncated;
    header_len = (size_t)len[0] | (size_t)len[1] << 8 | (size_t)len[2] << 16 | (size_t)len[3] << 24;
    if (header_len >= sizeof header) {
        fprintf(stderr, "classify: '%s': .npy header too long (%zu bytes)\n", path, header_len);
        goto done;
    }
    if (fread(header, 1, header_len, f) != header_len) goto truncated;
    header[header_len] = '\0';
    if (!strstr(header, "'descr': '<f4'") || !strstr(header, "'fortran_order': False")) {
        fprintf(stderr, "classify: '%s' must hold float32 ('<f4') in C order; its header is %s\n", path, header);
        goto done;
    }
    const char *shape = strstr(header, "'shape': (");
    if (!shape) {
        fprintf(stderr, "classify: '%s': no shape in the .npy header\n", path);
        goto done;
    }
    size_t n = 1;
    for (const char *p = shape + 10; *p && *p != ')';) {
        char *end;
        long long d = strtoll(p, &end, 10);
        if (end == p) { ++p; continue; }
        if (d < 0) goto done;
        n *= (size_t)d;
        p = end;
    }
    float *buf = malloc(n ? n * sizeof *buf : 1);
    if (!buf) {
        status = 4;
        goto done;
    }
    if (fread(buf, sizeof *buf, n, f) != n) {
        free(buf);
        goto truncated;
    }
    *data = buf;
    *count = n;
    status = 0;
    goto done;
truncated:
    fprintf(stderr, "classify: '%s' is truncated\n", path);
done:
    fclose(f);
    return status;
}

static int bundle_error(const char *what, int code) {
    fprintf(stderr, "classify: %s failed (status %d): %s\n", what, code, cnncc_bundle_last_error());
    return 2;
}

int main(int argc, char **argv) {
    const char *weights = NULL, *out_path = NULL;
    int threads = 0, top = 5, repeats = 0, opt;
    while ((opt = getopt(argc, argv, "w:t:k:r:o:")) != -1) {
        switch (opt) {
        case 'w': weights = optarg; break;
        case 't': threads = atoi(optarg); break;
        case 'k': top = atoi(optarg); break;
        case 'r': repeats = atoi(optarg); break;
        case 'o': out_path = optarg; break;
        default: goto usage;
        }
    }
    if (optind != argc - 1 || top < 1 || repeats < 0) goto usage;

    float *x = NULL;
    size_t count = 0;
    int status = read_npy(argv[optind], &x, &count);
    if (status) return status;
    /* The batch this file holds (rounded up): the bundle checks that the size matches exactly. */
    int64_t batch = (int64_t)((count + CNNCC_BUNDLE_INPUT0_SAMPLE_ELEMS - 1) / CNNCC_BUNDLE_INPUT0_SAMPLE_ELEMS);
    size_t out_count = (size_t)(batch ? batch : 1) * CNNCC_BUNDLE_OUTPUT0_SAMPLE_ELEMS;
    float *y = malloc(out_count * sizeof *y);
    if (!y) {
        free(x);
        return 4;
    }

    double t0 = now();
    cnncc_bundle_model *model = NULL;
    int code = cnncc_bundle_create(weights, threads, &model);
    const void *inputs[1] = {x};
    size_t input_bytes[1] = {count * sizeof *x};
    void *outputs[1] = {y};
    size_t output_bytes[1] = {(size_t)batch * CNNCC_BUNDLE_OUTPUT0_SAMPLE_BYTES};
    if (code != CNNCC_OK) {
        status = bundle_error("create", code);
        goto cleanup;
    }
    double t1 = now();
    code = cnncc_bundle_run(model, batch, inputs, input_bytes, outputs, output_bytes);
    if (code != CNNCC_OK) {
        status = bundle_error("run", code);
        goto cleanup;
    }
    double t2 = now();
    printf("%s: batch %lld, load + first run %.3f ms (create %.3f ms, first run %.3f ms)\n", CNNCC_BUNDLE_NAME,
           (long long)batch, (t2 - t0) * 1e3, (t1 - t0) * 1e3, (t2 - t1) * 1e3);
    if (repeats > 0) {
        double t3 = now();
        for (int r = 0; r < repeats && code == CNNCC_OK; ++r)
            code = cnncc_bundle_run(model, batch, inputs, input_bytes, outputs, output_bytes);
        if (code != CNNCC_OK) {
            status = bundle_error("run", code);
            goto cleanup;
        }
        printf("steady state: %.3f ms per run (mean of %d)\n", (now() - t3) * 1e3 / repeats, repeats);
    }
    int classes = CNNCC_BUNDLE_OUTPUT0_SAMPLE_ELEMS;
    if (top > classes) top = classes;
    for (int64_t i = 0; i < batch; ++i) {
        const float *row = y + i * classes;
        float last = 0.0f;
        int last_class = -1;
        printf("image %lld:", (long long)i);
        for (int k = 0; k < top; ++k) {  /* the next class after (last, last_class) in descending order */
            int best = -1;
            for (int c = 0; c < classes; ++c) {
                int after = last_class < 0 || row[c] < last || (row[c] == last && c > last_class);
                if (after && (best < 0 || row[c] > row[best])) best = c;
            }
            if (best < 0) break;
            printf(" %d (%.4g)", best, row[best]);
            last = row[best];
            last_class = best;
        }
        printf("\n");
    }
    if (out_path) {
        FILE *f = fopen(out_path, "wb");
        if (!f || fwrite(y, sizeof *y, out_count, f) != out_count) {
            fprintf(stderr, "classify: cannot write '%s'\n", out_path);
            status = 3;
        }
        if (f && fclose(f) != 0) status = 3;
    }
cleanup:
    cnncc_bundle_destroy(model);
    free(x);
    free(y);
    return status;
usage:
    fprintf(stderr, "usage: %s [-w WEIGHTS] [-t THREADS] [-k TOP] [-r REPEATS] [-o OUT.bin] INPUT.npy\n", argv[0]);
    return 1;
}
