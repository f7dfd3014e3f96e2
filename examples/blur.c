/*
 * blur: large payloads.  Blurs a grayscale image (a box blur, 3x3) in
 * bands of rows: each task gets its band and the row above and below as
 * one bin, hundreds of KiB, and returns the blurred band as a bin of the
 * same size.  Arguments and results of 64 KiB or more cross through the
 * pool's shared memory, copied once on each side, instead of through the
 * pipes; the pool's counters say how many did.  Checks the result against
 * a serial blur and prints both times.
 *
 *   cc blur.c $(pkg-config --cflags --libs forkpool) -o blur
 *   ./blur [width height]
 *
 * The defaults are 4096 x 4096 (16 MiB), in bands of 64 rows.
 */
#define _POSIX_C_SOURCE 200809L
#include <forkpool.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BAND 64 /* rows per task: 256 KiB at the default width */

/* Blurs rows [first, first + rows) of src (w bytes a row, h rows) into dst,
 * which holds just those rows.  Edges repeat the nearest pixel. */
static void blur_rows(const unsigned char *src, int w, int h, int first,
                      int rows, unsigned char *dst)
{
  for (int y = first; y < first + rows; y++)
    for (int x = 0; x < w; x++) {
      unsigned sum = 0;
      for (int dy = -1; dy <= 1; dy++)
        for (int dx = -1; dx <= 1; dx++) {
          int yy = y + dy < 0 ? 0 : y + dy >= h ? h - 1 : y + dy;
          int xx = x + dx < 0 ? 0 : x + dx >= w ? w - 1 : x + dx;
          sum += src[(size_t)yy * w + xx];
        }
      dst[(size_t)(y - first) * w + x] = (unsigned char)(sum / 9);
    }
}

/* --- The task: it runs in the workers ------------------------------------ */

/*
 * [pixels, width, above, rows]: pixels holds `above` rows before the band
 * (0 or 1), the band's `rows` rows, and maybe one row after it.  Returns
 * the band blurred, rows x width bytes, as a bin.
 */
static int blur(fp_call *call, const msgpack_object *args,
                msgpack_packer *out)
{
  const void *px;
  size_t n;
  int64_t w, above, rows;
  if (fp_unpack(args, "[yIII]", &px, &n, &w, &above, &rows) != 0 || w <= 0 ||
      rows <= 0 || above < 0 || above > 1 || n % (size_t)w != 0 ||
      n / (size_t)w < (size_t)(above + rows))
    return fp_call_fail(call, "TypeError", "blur takes [pixels w above rows]");
  /* The pixels are read in place and are read-only: write elsewhere. */
  unsigned char *dst = malloc((size_t)(rows * w));
  if (dst == NULL)
    return fp_call_fail(call, "MemoryError", "no memory for a band");
  blur_rows(px, (int)w, (int)(n / (size_t)w), (int)above, (int)rows, dst);
  int rc = msgpack_pack_bin_with_body(out, dst, (size_t)(rows * w));
  free(dst);
  return rc;
}

static const fp_task tasks[] = {{"blur", blur}, {NULL, NULL}};

/* --- The caller ------------------------------------------------------------ */

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
  int w = argc > 2 ? atoi(argv[1]) : 4096, h = argc > 2 ? atoi(argv[2]) : 4096;
  if (argc == 2 || argc > 3 || w < 1 || h < 1 || w > 65536 || h > 65536) {
    fprintf(stderr, "usage: blur [width height]\n");
    return 2;
  }
  size_t size = (size_t)w * h;
  int nbands = (h + BAND - 1) / BAND;
  unsigned char *img = malloc(size), *serial = malloc(size),
                *pooled = malloc(size);
  fp_future **f = calloc((size_t)nbands, sizeof *f);
  if (img == NULL || serial == NULL || pooled == NULL || f == NULL) {
    fprintf(stderr, "blur: out of memory\n");
    return 1;
  }
  for (size_t i = 0; i < size; i++) /* a pattern with edges to blur */
    img[i] = (unsigned char)((i % (size_t)w) * 7 ^ (i / (size_t)w) * 13);

  double t0 = now();
  blur_rows(img, w, h, 0, h, serial);
  double t_serial = now() - t0;

  fp_pool_options opts = FP_POOL_OPTIONS_INIT;
  opts.tasks = tasks;
  fp_pool *pool;
  int rc = fp_pool_create(&pool, &opts);
  if (rc != 0) {
    fprintf(stderr, "fp_pool_create: %s\n", fp_strerror(rc));
    return 1;
  }

  /* Each band goes with its neighbouring rows, packed straight from the
   * image: fp_submit copies the bytes, so the buffer is reused at once. */
  t0 = now();
  msgpack_sbuffer sb;
  msgpack_packer pk;
  msgpack_sbuffer_init(&sb);
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  int failed = 0;
  for (int b = 0; b < nbands && !failed; b++) {
    int y0 = b * BAND, rows = h - y0 < BAND ? h - y0 : BAND;
    int above = y0 > 0, below = y0 + rows < h;
    size_t first = (size_t)(y0 - above) * w;
    size_t n = (size_t)(above + rows + below) * w;
    msgpack_sbuffer_clear(&sb);
    if (msgpack_pack_array(&pk, 4) || msgpack_pack_bin(&pk, n) ||
        msgpack_pack_bin_body(&pk, img + first, n) ||
        msgpack_pack_int(&pk, w) || msgpack_pack_int(&pk, above) ||
        msgpack_pack_int(&pk, rows) ||
        (rc = fp_submit(pool, "blur", sb.data, sb.size, &f[b])) != 0) {
      fprintf(stderr, "band %d: %s\n", b, fp_strerror(rc ? rc : FP_ENOMEM));
      failed = 1;
    }
  }
  msgpack_sbuffer_destroy(&sb);
  for (int b = 0; b < nbands && f[b] != NULL; b++) {
    const msgpack_object *r;
    size_t off = (size_t)b * BAND * w, want = size - off;
    if (want > (size_t)BAND * w)
      want = (size_t)BAND * w;
    if ((rc = fp_future_result(f[b], -1, &r)) != 0) {
      fprintf(stderr, "band %d: %s\n", b, fp_future_error(f[b]));
      failed = 1;
    } else if (r->type != MSGPACK_OBJECT_BIN || r->via.bin.size != want) {
      fprintf(stderr, "band %d: not %zu bytes of pixels\n", b, want);
      failed = 1;
    } else {
      memcpy(pooled + off, r->via.bin.ptr, want);
    }
    fp_future_release(f[b]);
  }
  double t_pool = now() - t0;

  fp_pool_stats st = FP_POOL_STATS_INIT;
  if (fp_pool_stats_get(pool, &st, NULL, 0) != 0)
    failed = 1;
  fp_pool_destroy(pool);
  int status = 1;
  if (failed)
    ; /* said above */
  else if (memcmp(serial, pooled, size) != 0)
    fprintf(stderr, "blur: the pool's image is not the serial one\n");
  else
    status = 0;
  if (status == 0) {
    printf("%dx%d, %d bands of %d rows\n", w, h, nbands, BAND);
    printf("serial: %.3f s\npool:   %.3f s (%u workers)\n", t_serial, t_pool,
           st.workers);
    printf("through shared memory: %llu of %d arguments, %llu of %d "
           "results\n",
           (unsigned long long)st.shared_args, nbands,
           (unsigned long long)st.shared_results, nbands);
  }
  free(f);
  free(img);
  free(serial);
  free(pooled);
  return status;
}
