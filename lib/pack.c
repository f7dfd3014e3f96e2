/*
 * fp_pack and fp_unpack: msgpack values written from, and read into, C
 * arguments described by a short format string.
 *
 * Each call walks its format three times: once for the syntax alone (no
 * argument read), once "dry" to check every argument without touching the
 * packer or the outputs, and once for real.  That is what lets fp_pack
 * promise that on a bad format or argument nothing was written.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <forkpool.h>

#include <limits.h>
#include <stdint.h>
#include <string.h>

/*
 * Deepest nesting of brackets a format may have.  It bounds the recursion
 * of the walkers below, so that a runaway format is FP_EINVAL rather than a
 * stack overflow.
 */
#define FMT_MAX_DEPTH 64

/* Which letters a format may use. */
typedef enum fmt_kind {
  FMT_PACK,  /* n b i I u U f s s# y O */
  FMT_UNPACK /* n b i I u U f s y o; map keys are s */
} fmt_kind;

/* A position in a format and the arguments that go with it. */
typedef struct walk {
  const char *p; /* the next format character */
  va_list ap;    /* the arguments not yet read */
} walk;

/* --- Format syntax ------------------------------------------------------- */

static const char *skip_ignored(const char *p)
{
  while (*p == ' ' || *p == ',' || *p == ':')
    p++;
  return p;
}

static int is_scalar_letter(char c, fmt_kind kind)
{
  const char *letters = kind == FMT_PACK ? "nbiIuUfsyO" : "nbiIuUfsyo";
  return c != '\0' && strchr(letters, c) != NULL;
}

/*
 * Moves *pp past the one value spec it points to (ignored characters
 * already skipped), checking its syntax only: no argument is read.  For an
 * array or map, *count (if count is not NULL) gets the number of items in
 * it, keys and values both counted.  FP_EINVAL for an unknown letter, an
 * unbalanced or mismatched bracket, a map with an odd number of items, an
 * unpack map key other than s, or nesting deeper than FMT_MAX_DEPTH.
 */
static int fmt_value(const char **pp, fmt_kind kind, int depth, size_t *count)
{
  const char *p = *pp;
  char close;

  if (*p == '[') {
    close = ']';
  } else if (*p == '{') {
    close = '}';
  } else if (is_scalar_letter(*p, kind)) {
    if (kind == FMT_PACK && p[0] == 's' && p[1] == '#')
      p++;
    *pp = p + 1;
    return 0;
  } else {
    return FP_EINVAL;
  }

  if (depth >= FMT_MAX_DEPTH)
    return FP_EINVAL;
  size_t n = 0;
  for (p = skip_ignored(p + 1); *p != close; p = skip_ignored(p)) {
    if (close == '}' && kind == FMT_UNPACK && n % 2 == 0 && *p != 's')
      return FP_EINVAL;
    int rc = fmt_value(&p, kind, depth + 1, NULL);
    if (rc != 0)
      return rc;
    n++;
  }
  if (close == '}' && n % 2 != 0)
    return FP_EINVAL;
  *pp = p + 1;
  if (count != NULL)
    *count = n;
  return 0;
}

/* 0 if fmt is exactly one value spec of this kind, FP_EINVAL otherwise. */
static int fmt_check(const char *fmt, fmt_kind kind)
{
  const char *p = skip_ignored(fmt);
  int rc = fmt_value(&p, kind, 0, NULL);
  if (rc != 0)
    return rc;
  return *skip_ignored(p) == '\0' ? 0 : FP_EINVAL;
}

/*
 * The number of items in the array or map whose opening bracket is at p, in
 * a format fmt_check has accepted.
 */
static size_t fmt_count(const char *p, fmt_kind kind)
{
  size_t n = 0;
  (void)fmt_value(&p, kind, 0, &n);
  return n;
}

/* --- Packing ------------------------------------------------------------- */

/* A msgpack_pack_* result as a forkpool code: they fail only to write. */
static int packed(int rc)
{
  return rc < 0 ? FP_ENOMEM : 0;
}

/*
 * 0 if msgpack_pack_object can pack o whole: every type known, and no NULL
 * pointer under a non-zero size.  FP_EINVAL otherwise.
 */
static int check_object(const msgpack_object *o)
{
  switch (o->type) {
  case MSGPACK_OBJECT_NIL:
  case MSGPACK_OBJECT_BOOLEAN:
  case MSGPACK_OBJECT_POSITIVE_INTEGER:
  case MSGPACK_OBJECT_NEGATIVE_INTEGER:
  case MSGPACK_OBJECT_FLOAT32:
  case MSGPACK_OBJECT_FLOAT64:
    return 0;
  case MSGPACK_OBJECT_STR:
    return o->via.str.ptr == NULL && o->via.str.size > 0 ? FP_EINVAL : 0;
  case MSGPACK_OBJECT_BIN:
    return o->via.bin.ptr == NULL && o->via.bin.size > 0 ? FP_EINVAL : 0;
  case MSGPACK_OBJECT_EXT:
    return o->via.ext.ptr == NULL && o->via.ext.size > 0 ? FP_EINVAL : 0;
  case MSGPACK_OBJECT_ARRAY:
    if (o->via.array.ptr == NULL && o->via.array.size > 0)
      return FP_EINVAL;
    for (uint32_t i = 0; i < o->via.array.size; i++)
      if (check_object(&o->via.array.ptr[i]) != 0)
        return FP_EINVAL;
    return 0;
  case MSGPACK_OBJECT_MAP:
    if (o->via.map.ptr == NULL && o->via.map.size > 0)
      return FP_EINVAL;
    for (uint32_t i = 0; i < o->via.map.size; i++)
      if (check_object(&o->via.map.ptr[i].key) != 0 ||
          check_object(&o->via.map.ptr[i].val) != 0)
        return FP_EINVAL;
    return 0;
  }
  return FP_EINVAL;
}

/*
 * Packs len bytes at ptr as a str or, if bin, a bin.  ptr may be NULL only
 * when len is 0; msgpack lengths stop at 4 GiB - 1.  With dry set, only
 * checks.
 */
static int pack_bytes(msgpack_packer *pk, const void *ptr, size_t len,
                      int bin, int dry)
{
  if ((ptr == NULL && len > 0) || (uint64_t)len > UINT32_MAX)
    return FP_EINVAL;
  if (dry)
    return 0;
  int rc = bin ? msgpack_pack_bin(pk, len) : msgpack_pack_str(pk, len);
  if (rc == 0 && len > 0)
    rc = bin ? msgpack_pack_bin_body(pk, ptr, len)
             : msgpack_pack_str_body(pk, ptr, len);
  return packed(rc);
}

static int pack_value(msgpack_packer *pk, walk *w, int dry);

/*
 * Packs the array or map whose opening bracket is at w->p: its header with
 * the item count taken from the format, then each item.
 */
static int pack_container(msgpack_packer *pk, walk *w, int dry)
{
  int map = *w->p == '{';
  size_t n = fmt_count(w->p, FMT_PACK);
  if ((uint64_t)n > UINT32_MAX)
    return FP_EINVAL;
  if (!dry) {
    int rc = map ? msgpack_pack_map(pk, n / 2) : msgpack_pack_array(pk, n);
    if (rc < 0)
      return FP_ENOMEM;
  }
  w->p++;
  for (size_t i = 0; i < n; i++) {
    int rc = pack_value(pk, w, dry);
    if (rc != 0)
      return rc;
  }
  w->p = skip_ignored(w->p) + 1; /* the closing bracket */
  return 0;
}

/*
 * Packs the one value spec at w->p (after ignored characters) from the
 * next arguments, and moves w past both.  With dry set, reads and checks
 * the arguments but writes nothing.  The format has passed fmt_check.
 */
static int pack_value(msgpack_packer *pk, walk *w, int dry)
{
  w->p = skip_ignored(w->p);
  switch (*w->p) {
  case '[':
  case '{':
    return pack_container(pk, w, dry);
  }

  char c = *w->p++;
  switch (c) {
  case 'n':
    return dry ? 0 : packed(msgpack_pack_nil(pk));
  case 'b': {
    int v = va_arg(w->ap, int);
    if (dry)
      return 0;
    return packed(v ? msgpack_pack_true(pk) : msgpack_pack_false(pk));
  }
  case 'i': {
    int v = va_arg(w->ap, int);
    return dry ? 0 : packed(msgpack_pack_int(pk, v));
  }
  case 'I': {
    int64_t v = va_arg(w->ap, int64_t);
    return dry ? 0 : packed(msgpack_pack_int64(pk, v));
  }
  case 'u': {
    unsigned v = va_arg(w->ap, unsigned);
    return dry ? 0 : packed(msgpack_pack_unsigned_int(pk, v));
  }
  case 'U': {
    uint64_t v = va_arg(w->ap, uint64_t);
    return dry ? 0 : packed(msgpack_pack_uint64(pk, v));
  }
  case 'f': {
    double v = va_arg(w->ap, double);
    return dry ? 0 : packed(msgpack_pack_double(pk, v));
  }
  case 's': {
    const char *s = va_arg(w->ap, const char *);
    if (*w->p == '#') {
      w->p++;
      size_t len = va_arg(w->ap, size_t);
      return pack_bytes(pk, s, len, 0, dry);
    }
    if (s == NULL)
      return FP_EINVAL;
    return pack_bytes(pk, s, strlen(s), 0, dry);
  }
  case 'y': {
    const void *ptr = va_arg(w->ap, const void *);
    size_t len = va_arg(w->ap, size_t);
    return pack_bytes(pk, ptr, len, 1, dry);
  }
  case 'O': {
    const msgpack_object *o = va_arg(w->ap, const msgpack_object *);
    if (o == NULL || check_object(o) != 0)
      return FP_EINVAL;
    return dry ? 0 : packed(msgpack_pack_object(pk, *o));
  }
  }
  return FP_EINVAL;
}

FP_EXTERN int fp_vpack(msgpack_packer *pk, const char *fmt, va_list ap)
{
  if (pk == NULL || fmt == NULL)
    return FP_EINVAL;
  int rc = fmt_check(fmt, FMT_PACK);
  if (rc != 0)
    return rc;

  walk w = {.p = fmt};
  va_copy(w.ap, ap);
  rc = pack_value(pk, &w, 1);
  va_end(w.ap);
  if (rc != 0)
    return rc;

  w.p = fmt;
  va_copy(w.ap, ap);
  rc = pack_value(pk, &w, 0);
  va_end(w.ap);
  return rc;
}

FP_EXTERN int fp_pack(msgpack_packer *pk, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  int rc = fp_vpack(pk, fmt, ap);
  va_end(ap);
  return rc;
}

/* --- Unpacking ----------------------------------------------------------- */

/*
 * The integer in o, if it lies in [min, max] (max >= 0), into *out.
 * FP_ETYPE if o is not an integer or is out of range.
 */
static int read_signed(const msgpack_object *o, int64_t min, int64_t max,
                       int64_t *out)
{
  if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
    if (o->via.u64 > (uint64_t)max)
      return FP_ETYPE;
    *out = (int64_t)o->via.u64;
    return 0;
  }
  if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
    if (o->via.i64 < min || o->via.i64 > max)
      return FP_ETYPE;
    *out = o->via.i64;
    return 0;
  }
  return FP_ETYPE;
}

/* As read_signed, for [0, max]: a negative number is FP_ETYPE. */
static int read_unsigned(const msgpack_object *o, uint64_t max, uint64_t *out)
{
  uint64_t v;
  if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
    v = o->via.u64;
  else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && o->via.i64 >= 0)
    v = (uint64_t)o->via.i64;
  else
    return FP_ETYPE;
  if (v > max)
    return FP_ETYPE;
  *out = v;
  return 0;
}

/* A float, or an integer converted (rounded if it has over 53 bits). */
static int read_double(const msgpack_object *o, double *out)
{
  switch (o->type) {
  case MSGPACK_OBJECT_FLOAT32:
  case MSGPACK_OBJECT_FLOAT64:
    *out = o->via.f64;
    return 0;
  case MSGPACK_OBJECT_POSITIVE_INTEGER:
    *out = (double)o->via.u64;
    return 0;
  case MSGPACK_OBJECT_NEGATIVE_INTEGER:
    *out = (double)o->via.i64;
    return 0;
  default:
    return FP_ETYPE;
  }
}

/* The value of the first STR key of map equal to key, or NULL. */
static const msgpack_object *map_find(const msgpack_object *map,
                                      const char *key)
{
  size_t len = strlen(key);
  for (uint32_t i = 0; i < map->via.map.size; i++) {
    const msgpack_object *k = &map->via.map.ptr[i].key;
    if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == len &&
        (len == 0 || memcmp(k->via.str.ptr, key, len) == 0))
      return &map->via.map.ptr[i].val;
  }
  return NULL;
}

static int unpack_value(walk *w, const msgpack_object *o);

/*
 * Reads the array or map whose opening bracket is at w->p.  An array must
 * have exactly as many items as the format; a map is searched for each key
 * argument and may have others.  With o NULL, only reads and checks the
 * arguments.
 */
static int unpack_container(walk *w, const msgpack_object *o)
{
  int map = *w->p == '{';
  size_t n = fmt_count(w->p, FMT_UNPACK);
  if (o != NULL) {
    if (o->type != (map ? MSGPACK_OBJECT_MAP : MSGPACK_OBJECT_ARRAY))
      return FP_ETYPE;
    if (!map && o->via.array.size != n)
      return FP_ETYPE;
  }
  w->p++;
  for (size_t i = 0; i < (map ? n / 2 : n); i++) {
    const msgpack_object *item = NULL;
    if (map) {
      w->p = skip_ignored(w->p) + 1; /* the key's s */
      const char *key = va_arg(w->ap, const char *);
      if (key == NULL)
        return FP_EINVAL;
      if (o != NULL && (item = map_find(o, key)) == NULL)
        return FP_ETYPE;
    } else if (o != NULL) {
      item = &o->via.array.ptr[i];
    }
    int rc = unpack_value(w, item);
    if (rc != 0)
      return rc;
  }
  w->p = skip_ignored(w->p) + 1; /* the closing bracket */
  return 0;
}

/*
 * Reads o by the one value spec at w->p (after ignored characters) into
 * the next arguments, and moves w past both.  With o NULL, only reads the
 * arguments and checks that none is NULL.  The format has passed fmt_check.
 */
static int unpack_value(walk *w, const msgpack_object *o)
{
  w->p = skip_ignored(w->p);
  switch (*w->p) {
  case '[':
  case '{':
    return unpack_container(w, o);
  }

  char c = *w->p++;
  int rc = 0;
  switch (c) {
  case 'n':
    if (o != NULL && o->type != MSGPACK_OBJECT_NIL)
      return FP_ETYPE;
    return 0;
  case 'b': {
    int *out = va_arg(w->ap, int *);
    if (out == NULL)
      return FP_EINVAL;
    if (o != NULL) {
      if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return FP_ETYPE;
      *out = o->via.boolean ? 1 : 0;
    }
    return 0;
  }
  case 'i': {
    int *out = va_arg(w->ap, int *);
    int64_t v;
    if (out == NULL)
      return FP_EINVAL;
    if (o != NULL && (rc = read_signed(o, INT_MIN, INT_MAX, &v)) == 0)
      *out = (int)v;
    return rc;
  }
  case 'I': {
    int64_t *out = va_arg(w->ap, int64_t *);
    if (out == NULL)
      return FP_EINVAL;
    return o != NULL ? read_signed(o, INT64_MIN, INT64_MAX, out) : 0;
  }
  case 'u': {
    unsigned *out = va_arg(w->ap, unsigned *);
    uint64_t v;
    if (out == NULL)
      return FP_EINVAL;
    if (o != NULL && (rc = read_unsigned(o, UINT_MAX, &v)) == 0)
      *out = (unsigned)v;
    return rc;
  }
  case 'U': {
    uint64_t *out = va_arg(w->ap, uint64_t *);
    if (out == NULL)
      return FP_EINVAL;
    return o != NULL ? read_unsigned(o, UINT64_MAX, out) : 0;
  }
  case 'f': {
    double *out = va_arg(w->ap, double *);
    if (out == NULL)
      return FP_EINVAL;
    return o != NULL ? read_double(o, out) : 0;
  }
  case 's': {
    const char **ptr = va_arg(w->ap, const char **);
    size_t *len = va_arg(w->ap, size_t *);
    if (ptr == NULL || len == NULL)
      return FP_EINVAL;
    if (o != NULL) {
      if (o->type != MSGPACK_OBJECT_STR)
        return FP_ETYPE;
      *ptr = o->via.str.ptr;
      *len = o->via.str.size;
    }
    return 0;
  }
  case 'y': {
    const void **ptr = va_arg(w->ap, const void **);
    size_t *len = va_arg(w->ap, size_t *);
    if (ptr == NULL || len == NULL)
      return FP_EINVAL;
    if (o != NULL) {
      if (o->type != MSGPACK_OBJECT_BIN)
        return FP_ETYPE;
      *ptr = o->via.bin.ptr;
      *len = o->via.bin.size;
    }
    return 0;
  }
  case 'o': {
    const msgpack_object **out = va_arg(w->ap, const msgpack_object **);
    if (out == NULL)
      return FP_EINVAL;
    if (o != NULL)
      *out = o;
    return 0;
  }
  }
  return FP_EINVAL;
}

FP_EXTERN int fp_vunpack(const msgpack_object *obj, const char *fmt,
                         va_list ap)
{
  if (obj == NULL || fmt == NULL)
    return FP_EINVAL;
  int rc = fmt_check(fmt, FMT_UNPACK);
  if (rc != 0)
    return rc;

  /* A NULL output is FP_EINVAL whatever obj holds, so check them first. */
  walk w = {.p = fmt};
  va_copy(w.ap, ap);
  rc = unpack_value(&w, NULL);
  va_end(w.ap);
  if (rc != 0)
    return rc;

  w.p = fmt;
  va_copy(w.ap, ap);
  rc = unpack_value(&w, obj);
  va_end(w.ap);
  return rc;
}

FP_EXTERN int fp_unpack(const msgpack_object *obj, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  int rc = fp_vunpack(obj, fmt, ap);
  va_end(ap);
  return rc;
}
