/*
 * mandelbrot: a CPU-bound job split over the pool.  Renders the Mandelbrot
 * set once in this process and once over the pool (one task per band of
 * rows), checks that both images are the same, writes it as a PNG and
 * prints both times and the speedup.
 *
 *   cc mandelbrot.c $(pkg-config --cflags --libs forkpool) -lpng -o mandelbrot
 *   ./mandelbrot [out.png [width height [maxiter]]]
 *
 * The defaults are mandelbrot.png, 1200x800 and 2000 iterations.
 */
#define _POSIX_C_SOURCE 200809L
#include <forkpool.h>

#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BAND 8 /* rows per task: enough work to dwarf the cost of a message */

/* Fills rows y0 .. y0+rows-1 of a width x height view of the square
 * [-2.25, 0.75] x [-1, 1], a byte per pixel: 0 inside the set, else 1..255
 * rising quickly with the iterations it took to escape. */
static void render(unsigned char *px, int y0, int rows, int width, int height,
                   int maxiter)
{
  double scale = 3.0 / width > 2.0 / height ? 3.0 / width : 2.0 / height;
  for (int y = y0; y < y0 + rows; y++) {
    double ci = (height / 2.0 - y) * scale;
    for (int x = 0; x < width; x++) {
      double cr = -0.75 + (x - width / 2.0) * scale;
      double zr = 0, zi = 0, zr2 = 0, zi2 = 0;
      int i = 0;
      while (i < maxiter && zr2 + zi2 <= 4.0) {
        zi = 2 * zr * zi + ci;
        zr = zr2 - zi2 + cr;
        zr2 = zr * zr;
        zi2 = zi * zi;
        i++;
      }
      *px++ = i == maxiter ? 0 : (unsigned char)(1 + 254L * i / (i + 16));
    }
  }
}

/* Runs in a worker: [y0, rows, width, height, maxiter] -> a bin of pixels. */
static int band(fp_call *call, const msgpack_object *args, msgpack_packer *out)
{
  int y0, rows, width, height, maxiter;
  if (fp_unpack(args, "[iiiii]", &y0, &rows, &width, &height, &maxiter) != 0)
    return fp_call_fail(call, "TypeError", "band takes five integers");
  unsigned char *px = malloc((size_t)rows * width);
  if (px == NULL)
    return fp_call_fail(call, "MemoryError", "no memory for %d rows", rows);
  render(px, y0, rows, width, height, maxiter);
  int rc = msgpack_pack_bin_with_body(out, px, (size_t)rows * width);
  free(px);
  return rc;
}

static const fp_task tasks[] = {{"band", band}, {NULL, NULL}};

static double now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Writes an 8-bit paletted PNG: black inside the set, a gradient outside. */
static int write_png(const char *path, const unsigned char *px, int width,
                     int height)
{
  FILE *fp = fopen(path, "wb");
  if (fp == NULL)
    return -1;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL,
                                            NULL);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (info == NULL || setjmp(png_jmpbuf(png))) { /* libpng's error path */
    png_destroy_write_struct(&png, &info);
    fclose(fp);
    return -1;
  }
  png_color pal[256] = {{0, 0, 0}};
  for (int i = 1; i < 256; i++) {
    double t = (i - 1) / 254.0, s = 1 - t;
    pal[i].red = (png_byte)(255 * (9 * s * t * t * t + t * t * t * t));
    pal[i].green = (png_byte)(255 * (15 * s * s * t * t + t * t));
    pal[i].blue = (png_byte)(255 * (8.5 * s * s * s * t + 0.3 * s * t));
  }
  png_init_io(png, fp);
  png_set_IHDR(png, info, width, height, 8, PNG_COLOR_TYPE_PALETTE,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_set_PLTE(png, info, pal, 256);
  png_write_info(png, info);
  for (int y = 0; y < height; y++)
    png_write_row(png, px + (size_t)y * width);
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  return fclose(fp) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
  const char *path = argc > 1 ? argv[1] : "mandelbrot.png";
  int width = argc > 3 ? atoi(argv[2]) : 1200;
  int height = argc > 3 ? atoi(argv[3]) : 800;
  int maxiter = argc > 4 ? atoi(argv[4]) : 2000;
  if (width < 1 || height < 1 || width > 20000 || height > 20000 ||
      maxiter < 1) {
    fprintf(stderr, "usage: mandelbrot [out.png [width height [maxiter]]]\n");
    return 2;
  }
  size_t size = (size_t)width * height;
  unsigned char *serial = malloc(size), *image = malloc(size);
  int nbands = (height + BAND - 1) / BAND;
  fp_future **f = calloc((size_t)nbands, sizeof *f);
  if (serial == NULL || image == NULL || f == NULL) {
    fprintf(stderr, "mandelbrot: out of memory\n");
    return 1;
  }

  double t0 = now();
  render(serial, 0, height, width, height, maxiter);
  double t_serial = now() - t0;

  fp_pool_options opts = FP_POOL_OPTIONS_INIT;
  opts.tasks = tasks;
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  opts.workers = ncpu > 0 ? (unsigned)ncpu : 1; /* what 0 means, but named */
  fp_pool *pool;
  int rc = fp_pool_create(&pool, &opts);
  if (rc != 0) {
    fprintf(stderr, "fp_pool_create: %s\n", fp_strerror(rc));
    return 1;
  }

  /* Submit every band, then collect them in order.  The workers start on
   * the first bands while we are still submitting the last ones.  The time
   * leaves out fp_pool_create: forking the workers is paid once per pool. */
  t0 = now();
  int failed = 0;
  for (int b = 0; b < nbands && !failed; b++) {
    int y0 = b * BAND, rows = height - y0 < BAND ? height - y0 : BAND;
    if ((rc = fp_submitf(pool, "band", &f[b], "[iiiii]", y0, rows, width,
                         height, maxiter)) != 0) {
      fprintf(stderr, "fp_submitf: %s\n", fp_strerror(rc));
      failed = 1;
    }
  }
  for (int b = 0; b < nbands && f[b] != NULL; b++) {
    const msgpack_object *r;
    size_t off = (size_t)b * BAND * width, want = size - off;
    if (want > (size_t)BAND * width)
      want = (size_t)BAND * width;
    if ((rc = fp_future_result(f[b], -1, &r)) != 0) {
      fprintf(stderr, "band %d: %s\n", b, fp_future_error(f[b]));
      failed = 1;
    } else if (r->type != MSGPACK_OBJECT_BIN || r->via.bin.size != want) {
      fprintf(stderr, "band %d: not %zu bytes of pixels\n", b, want);
      failed = 1;
    } else {
      /* The bin points into the future's buffer: copy it before release. */
      memcpy(image + off, r->via.bin.ptr, want);
    }
    fp_future_release(f[b]);
  }
  double t_pool = now() - t0;
  fp_pool_destroy(pool);
  free(f);

  int status = 1;
  if (failed)
    ; /* said above */
  else if (memcmp(serial, image, size) != 0)
    fprintf(stderr, "mandelbrot: the pool's image is not the serial one\n");
  else if (write_png(path, image, width, height) != 0)
    perror(path);
  else
    status = 0;
  if (status == 0) {
    printf("%dx%d, %d iterations, %d tasks of %d rows\n", width, height,
           maxiter, nbands, BAND);
    printf("serial: %.3f s\npool:   %.3f s (%u workers)\nspeedup: %.2fx\n",
           t_serial, t_pool, opts.workers, t_serial / t_pool);
    printf("wrote %s\n", path);
  }
  free(serial);
  free(image);
  return status;
}
