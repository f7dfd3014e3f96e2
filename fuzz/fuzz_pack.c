/*
 * fp_pack and fp_unpack (lib/pack.c) with formats and values the fuzzer
 * chooses, against a reference written here from the man page fp_pack(3):
 * the same format must be accepted or refused, fp_pack must write the same
 * bytes (and nothing at all when it refuses), and fp_unpack must return the
 * same code and leave every output the same, written or not.
 *
 * Input: a length byte and that many bytes of format (up to a NUL), a
 * length byte and that many bytes of msgpack (the object fp_unpack reads
 * and 'O' packs), then the bytes the arguments are made of.
 *
 * How arguments are passed: a format decides the types of a variadic call
 * at run time, which C cannot express.  So fp_pack is called with NI
 * 64-bit integer slots followed by ND doubles, and fp_unpack with NP
 * pointers; the slots are filled in the order the format's letters take
 * them.  This relies on the x86-64 and AArch64 (Linux) calling conventions,
 * where each integer or pointer argument fills one 8-byte slot read in
 * order by va_arg whatever its C type, and doubles come from registers of
 * their own; hence the #error below on other machines.
 */
#include "forkpool-private.h"

#include "fuzz.h"

#include <limits.h>

#if !(defined(__x86_64__) || defined(__aarch64__)) || defined(__APPLE__)
#error "fuzz_pack passes arguments by the x86-64 or AArch64 Linux conventions"
#endif

#define NI 24        /* fp_pack's integer and pointer slots */
#define ND 8         /* fp_pack's double slots: all in registers */
#define NP 32        /* fp_unpack's pointer slots */
#define FMT_MAX 255

/* --- The reference: the format grammar of fp_pack(3) ---------------------- */

typedef struct node {
  char c;            /* the letter, '[' or '{' */
  char hash;         /* pack: "s#" */
  char key;          /* unpack: a map key, one argument */
  int nkids, kid;    /* a container's items, its first item */
  int next;          /* the next item of the enclosing container */
  int pos;           /* offset in the format */
  int slot;          /* unpack: the first pointer slot it takes */
} node;

typedef struct ast {
  const char *fmt;
  int unpack;
  node n[FMT_MAX + 1];
  int len;
  int nslots;        /* unpack: slots the whole format takes */
} ast;

static int is_ignored(char c)
{
  return c == ' ' || c == ',' || c == ':';
}

/* One value at *pp and what it holds: its node, or -1 if not a format. */
static int parse_value(ast *a, const char **pp, int depth, int is_key)
{
  const char *p = *pp;
  while (is_ignored(*p))
    p++;
  if (*p == '\0')
    return -1;
  int id = a->len++;
  node *n = &a->n[id];
  memset(n, 0, sizeof *n);
  n->c = *p;
  n->kid = n->next = -1;
  n->pos = (int)(p - a->fmt);
  n->key = (char)is_key;
  if (n->c == '[' || n->c == '{') {
    if (depth == 64) /* this one would be the 65th level */
      return -1;
    char close = n->c == '[' ? ']' : '}';
    int last = -1;
    for (p++;; ) {
      while (is_ignored(*p))
        p++;
      if (*p == close)
        break;
      int key = a->unpack && n->c == '{' && n->nkids % 2 == 0;
      if (key && *p != 's')
        return -1;
      int k = parse_value(a, &p, depth + 1, key);
      if (k < 0)
        return -1;
      if (last < 0)
        n->kid = k;
      else
        a->n[last].next = k;
      last = k;
      n->nkids++;
    }
    if (n->c == '{' && n->nkids % 2 != 0)
      return -1;
    p++;
  } else {
    const char *letters = a->unpack ? "nbiIuUfsyo" : "nbiIuUfsyO";
    if (strchr(letters, n->c) == NULL)
      return -1;
    p++;
    if (!a->unpack && n->c == 's' && *p == '#') {
      n->hash = 1;
      p++;
    }
  }
  *pp = p;
  return id;
}

/* 0 if fmt is exactly one value; the tree is then a->n[0]. */
static int parse(ast *a, const char *fmt, int unpack)
{
  a->fmt = fmt;
  a->unpack = unpack;
  a->len = 0;
  a->nslots = 0;
  const char *p = fmt;
  if (parse_value(a, &p, 0, 0) != 0)
    return -1;
  while (is_ignored(*p))
    p++;
  if (*p != '\0')
    return -1;
  /* Nodes are in the order of the format: so are their arguments. */
  for (int i = 0; i < a->len; i++) {
    node *n = &a->n[i];
    n->slot = a->nslots;
    if (n->key)
      a->nslots += 1;
    else if (n->c == 's' || n->c == 'y')
      a->nslots += 2;
    else if (strchr("biIuUfo", n->c) != NULL)
      a->nslots += 1;
  }
  return 0;
}

/* --- Packing: arguments and the expected bytes ------------------------------ */

/* An 'O' argument: which object, and whether fp_pack must take it. */
typedef struct obj_arg {
  const msgpack_object *o;
  int valid;
} obj_arg;

typedef struct pack_args {
  uint64_t s[NI];            /* integer and pointer slots, in order */
  double d[ND];
  int slot_at[FMT_MAX + 1];  /* the format offset's first integer slot */
  int dbl_at[FMT_MAX + 1];
  int ns, nd;
  obj_arg objs[NI];          /* by slot */
  void *owned[NI];           /* buffers to free */
  int nowned;
} pack_args;

static msgpack_object broken[4]; /* objects fp_pack must refuse */

static void *owned(pack_args *pa, size_t n)
{
  void *b = malloc(n ? n : 1);
  FZ_CHECK(b != NULL);
  pa->owned[pa->nowned++] = b;
  return b;
}

/*
 * Fills the slots for the letters of fmt, in order, from the input: the
 * order in which fp_pack takes them for any format it accepts.  0 if they
 * fit in the slots.
 */
static int make_pack_args(pack_args *pa, const char *fmt, fz *z,
                          const msgpack_object *blob)
{
  memset(pa, 0, sizeof *pa);
  for (int pos = 0; fmt[pos] != '\0'; pos++) {
    char c = fmt[pos];
    pa->slot_at[pos] = pa->ns;
    pa->dbl_at[pos] = pa->nd;
    int need = c == 'y' || (c == 's' && fmt[pos + 1] == '#') ? 2
               : strchr("biIuUsO", c) != NULL       ? 1
                                                     : 0;
    if (pa->ns + need > NI || (c == 'f' && pa->nd == ND))
      return -1;
    switch (c) {
    case 'b':
    case 'i':
      pa->s[pa->ns++] = (uint64_t)(int64_t)(int32_t)fz_u64(z, 4);
      break;
    case 'u':
      pa->s[pa->ns++] = (uint32_t)fz_u64(z, 4);
      break;
    case 'I':
    case 'U':
      pa->s[pa->ns++] = fz_u64(z, 8);
      break;
    case 'f': {
      uint64_t bits = fz_u64(z, 8);
      memcpy(&pa->d[pa->nd++], &bits, sizeof bits);
      break;
    }
    case 'y':
    case 's': {
      uint8_t sel = fz_u8(z);
      if (c == 's' && need == 1) { /* NUL-terminated, or NULL */
        size_t n = sel % 8, got;
        const uint8_t *src = fz_bytes(z, n, &got);
        char *str = owned(pa, got + 1);
        memcpy(str, src, got);
        str[got] = '\0';
        pa->s[pa->ns++] = sel == 0xff ? 0 : (uintptr_t)str;
        break;
      }
      /* A pointer and a length, sometimes a wrong pair. */
      size_t n = sel % 32, got;
      const uint8_t *src = fz_bytes(z, n, &got);
      char *buf = owned(pa, got);
      memcpy(buf, src, got);
      uint64_t ptr = (uintptr_t)buf, len = got;
      if (sel == 0xff)
        ptr = 0, len = 0;
      else if (sel == 0xfe)
        ptr = 0, len = 3;
      else if (sel == 0xfd)
        len = (uint64_t)UINT32_MAX + 1; /* refused before it is read */
      pa->s[pa->ns++] = ptr;
      pa->s[pa->ns++] = len;
      if (c == 's')
        pos++; /* the '#' */
      break;
    }
    case 'O': {
      uint8_t sel = fz_u8(z) % 8;
      obj_arg *oa = &pa->objs[pa->ns];
      oa->valid = 1;
      if (sel == 1) {
        oa->o = NULL, oa->valid = 0;
      } else if (sel >= 2 && sel <= 4) {
        oa->o = &broken[sel - 2], oa->valid = 0;
      } else if (sel == 5) {
        oa->o = &broken[3]; /* an empty str with a NULL pointer: fine */
      } else {
        oa->o = blob;
      }
      pa->s[pa->ns++] = (uintptr_t)oa->o;
      break;
    }
    }
  }
  return 0;
}

/* 0 if fp_pack must take the arguments of node i and what it holds. */
static int args_ok(const ast *a, const pack_args *pa, int i)
{
  const node *n = &a->n[i];
  int s = pa->slot_at[n->pos];
  for (int k = n->kid; k >= 0; k = a->n[k].next)
    if (args_ok(a, pa, k) != 0)
      return -1;
  if (n->c == 's' && !n->hash)
    return pa->s[s] == 0 ? -1 : 0;
  if (n->c == 'y' || n->c == 's')
    return (pa->s[s] == 0 && pa->s[s + 1] > 0) || pa->s[s + 1] > UINT32_MAX
               ? -1
               : 0;
  if (n->c == 'O')
    return pa->objs[s].valid ? 0 : -1;
  return 0;
}

/* The bytes fp_pack should write for node i. */
static void ref_pack(msgpack_packer *pk, const ast *a, const pack_args *pa,
                     int i)
{
  const node *n = &a->n[i];
  int s = pa->slot_at[n->pos];
  const char *ptr;
  size_t len;
  switch (n->c) {
  case '[':
  case '{':
    if (n->c == '[')
      msgpack_pack_array(pk, (size_t)n->nkids);
    else
      msgpack_pack_map(pk, (size_t)n->nkids / 2);
    for (int k = n->kid; k >= 0; k = a->n[k].next)
      ref_pack(pk, a, pa, k);
    return;
  case 'n':
    msgpack_pack_nil(pk);
    return;
  case 'b':
    if ((int)pa->s[s])
      msgpack_pack_true(pk);
    else
      msgpack_pack_false(pk);
    return;
  case 'i':
    msgpack_pack_int64(pk, (int)pa->s[s]);
    return;
  case 'I':
    msgpack_pack_int64(pk, (int64_t)pa->s[s]);
    return;
  case 'u':
    msgpack_pack_uint64(pk, (unsigned)pa->s[s]);
    return;
  case 'U':
    msgpack_pack_uint64(pk, pa->s[s]);
    return;
  case 'f':
    msgpack_pack_double(pk, pa->d[pa->dbl_at[n->pos]]);
    return;
  case 's':
  case 'y':
    ptr = (const char *)(uintptr_t)pa->s[s];
    len = n->c == 's' && !n->hash ? strlen(ptr) : (size_t)pa->s[s + 1];
    if (n->c == 's')
      msgpack_pack_str(pk, len);
    else
      msgpack_pack_bin(pk, len);
    if (len > 0 && n->c == 's')
      msgpack_pack_str_body(pk, ptr, len);
    else if (len > 0)
      msgpack_pack_bin_body(pk, ptr, len);
    return;
  case 'O':
    msgpack_pack_object(pk, *pa->objs[s].o);
    return;
  }
  FZ_CHECK(!"a letter the parser let through");
}

static void check_pack(const char *fmt, fz *z, const msgpack_object *blob)
{
  static pack_args pa;
  static ast a;
  msgpack_sbuffer got, want;
  if (make_pack_args(&pa, fmt, z, blob) != 0) {
    for (int i = 0; i < pa.nowned; i++)
      free(pa.owned[i]);
    return;
  }

  msgpack_packer pk, ref;
  msgpack_sbuffer_init(&got);
  msgpack_sbuffer_init(&want);
  msgpack_packer_init(&pk, &got, msgpack_sbuffer_write);
  msgpack_packer_init(&ref, &want, msgpack_sbuffer_write);
  /* Something already there, so that "unchanged" is not "empty". */
  msgpack_pack_nil(&pk);
  msgpack_pack_nil(&ref);

  const uint64_t *s = pa.s;
  const double *d = pa.d;
  int rc = fp_pack(&pk, fmt, s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
                   s[8], s[9], s[10], s[11], s[12], s[13], s[14], s[15], s[16],
                   s[17], s[18], s[19], s[20], s[21], s[22], s[23], d[0], d[1],
                   d[2], d[3], d[4], d[5], d[6], d[7]);
  int valid = parse(&a, fmt, 0) == 0 && args_ok(&a, &pa, 0) == 0;
  if (valid)
    ref_pack(&ref, &a, &pa, 0);
  FZ_CHECK(rc == (valid ? 0 : FP_EINVAL));
  FZ_CHECK(got.size == want.size);
  FZ_CHECK(memcmp(got.data, want.data, got.size) == 0);
  msgpack_sbuffer_destroy(&got);
  msgpack_sbuffer_destroy(&want);
  for (int i = 0; i < pa.nowned; i++)
    free(pa.owned[i]);
}

/* --- Unpacking: outputs compared with the reference's -------------------- */

/* An output, or a key: each slot points at one, or is NULL. */
typedef union cell {
  char key[16]; /* NUL-ended, for a map key */
  int i;
  unsigned u;
  int64_t i64;
  uint64_t u64;
  double f;
  const void *ptr;
  size_t len;
} cell;

typedef struct unpack_args {
  cell got[NP], want[NP];
  void *p[NP];               /* what fp_unpack gets */
  int null[NP];
} unpack_args;

static int str_is(const msgpack_object *k, const char *key)
{
  size_t n = strlen(key);
  return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
         strncmp(k->via.str.ptr ? k->via.str.ptr : "", key, n) == 0;
}

/* Reads o by node i into ua->want, as fp_unpack(3) says: 0 or FP_ETYPE. */
static int ref_unpack(const ast *a, unpack_args *ua, int i,
                      const msgpack_object *o)
{
  const node *n = &a->n[i];
  cell *c = &ua->want[n->slot];
  int pos = o->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
  int neg = o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
  switch (n->c) {
  case '[':
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != (uint32_t)n->nkids)
      return FP_ETYPE;
    for (int k = n->kid, j = 0; k >= 0; k = a->n[k].next, j++) {
      int rc = ref_unpack(a, ua, k, &o->via.array.ptr[j]);
      if (rc != 0)
        return rc;
    }
    return 0;
  case '{':
    if (o->type != MSGPACK_OBJECT_MAP)
      return FP_ETYPE;
    for (int k = n->kid; k >= 0; k = a->n[a->n[k].next].next) {
      const char *key = ua->want[a->n[k].slot].key;
      const msgpack_object *v = NULL;
      for (uint32_t j = o->via.map.size; j-- > 0;) /* the first one wins */
        if (str_is(&o->via.map.ptr[j].key, key))
          v = &o->via.map.ptr[j].val;
      if (v == NULL)
        return FP_ETYPE;
      int rc = ref_unpack(a, ua, a->n[k].next, v);
      if (rc != 0)
        return rc;
    }
    return 0;
  case 'n':
    return o->type == MSGPACK_OBJECT_NIL ? 0 : FP_ETYPE;
  case 'b':
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
      return FP_ETYPE;
    c->i = o->via.boolean != 0;
    return 0;
  case 'i':
    if ((pos && o->via.u64 <= INT_MAX) || (neg && o->via.i64 >= INT_MIN)) {
      c->i = pos ? (int)o->via.u64 : (int)o->via.i64;
      return 0;
    }
    return FP_ETYPE;
  case 'I':
    if ((pos && o->via.u64 <= INT64_MAX) || neg) {
      c->i64 = pos ? (int64_t)o->via.u64 : o->via.i64;
      return 0;
    }
    return FP_ETYPE;
  case 'u':
    if (!pos || o->via.u64 > UINT_MAX)
      return FP_ETYPE;
    c->u = (unsigned)o->via.u64;
    return 0;
  case 'U':
    if (!pos)
      return FP_ETYPE;
    c->u64 = o->via.u64;
    return 0;
  case 'f':
    if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
      c->f = o->via.f64;
    else if (pos)
      c->f = (double)o->via.u64;
    else if (neg)
      c->f = (double)o->via.i64;
    else
      return FP_ETYPE;
    return 0;
  case 's':
  case 'y':
    if (o->type != (n->c == 's' ? MSGPACK_OBJECT_STR : MSGPACK_OBJECT_BIN))
      return FP_ETYPE;
    c[0].ptr = n->c == 's' ? (const void *)o->via.str.ptr : o->via.bin.ptr;
    c[1].len = n->c == 's' ? o->via.str.size : o->via.bin.size;
    return 0;
  case 'o':
    c->ptr = o;
    return 0;
  }
  FZ_CHECK(!"a letter the parser let through");
  return 0;
}

static void check_unpack(const char *fmt, fz *z, const msgpack_object *obj)
{
  static unpack_args ua;
  static ast a;
  /* At most two arguments a letter: more than NP could read past them. */
  int most = 0;
  for (const char *p = fmt; *p; p++)
    most += *p == 's' || *p == 'y' ? 2 : strchr("biIuUfo", *p) != NULL;
  if (most > NP)
    return;

  memset(&ua, 0, sizeof ua);
  for (int i = 0; i < NP; i++) {
    uint8_t sel = fz_u8(z);
    size_t got;
    const uint8_t *k = fz_bytes(z, sel % 4, &got);
    memcpy(ua.got[i].key, k, got);
    ua.null[i] = sel == 0xff;
    ua.p[i] = ua.null[i] ? NULL : &ua.got[i];
  }
  memcpy(ua.want, ua.got, sizeof ua.got);

  void *const *p = ua.p;
  int rc = fp_unpack(obj, fmt, p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7],
                     p[8], p[9], p[10], p[11], p[12], p[13], p[14], p[15],
                     p[16], p[17], p[18], p[19], p[20], p[21], p[22], p[23],
                     p[24], p[25], p[26], p[27], p[28], p[29], p[30], p[31]);
  int want = FP_EINVAL;
  if (parse(&a, fmt, 1) == 0) {
    want = 0;
    for (int i = 0; i < a.nslots; i++)
      if (ua.null[i])
        want = FP_EINVAL; /* refused before anything is read */
    if (want == 0)
      want = ref_unpack(&a, &ua, 0, obj);
  }
  FZ_CHECK(rc == want);
  FZ_CHECK(memcmp(ua.got, ua.want, sizeof ua.got) == 0);
}

/* --- The target ------------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  fz z = {data, size};
  char fmt[FMT_MAX + 1];
  size_t n;
  const uint8_t *src = fz_bytes(&z, fz_u8(&z), &n);
  memcpy(fmt, src, n);
  fmt[n] = '\0';

  /* The object, in a buffer of its own so that reading past it is seen. */
  src = fz_bytes(&z, fz_u8(&z), &n);
  char *buf = malloc(n + 1);
  FZ_CHECK(buf != NULL);
  memcpy(buf, src, n);
  msgpack_zone zone;
  msgpack_object obj = {.type = MSGPACK_OBJECT_NIL};
  size_t off = 0;
  FZ_CHECK(msgpack_zone_init(&zone, 256));
  if (msgpack_unpack(buf, n, &off, &zone, &obj) <= 0)
    obj.type = MSGPACK_OBJECT_NIL;

  broken[0].type = (msgpack_object_type)0x7f; /* no such type */
  broken[1].type = MSGPACK_OBJECT_STR;        /* NULL with a size */
  broken[1].via.str.size = 2;
  broken[2].type = MSGPACK_OBJECT_ARRAY;      /* holds a broken one */
  broken[2].via.array.size = 1;
  broken[2].via.array.ptr = &broken[1];
  broken[3].type = MSGPACK_OBJECT_STR;        /* NULL, size 0: valid */

  check_pack(fmt, &z, &obj);
  check_unpack(fmt, &z, &obj);

  msgpack_zone_destroy(&zone);
  free(buf);
  return 0;
}
