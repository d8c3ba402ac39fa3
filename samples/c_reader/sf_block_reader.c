/* sf_block_reader ARTIFACT_DIR BLOCK_INDEX TOKEN_ID: loads one block of a shardforge artifact and one
   token's embedding row, decodes every tensor to f32 and prints each one's sum and sum of squares
   (docs/format.md, "Loading on a device"). C99, libc only; every byte read is bounds-checked. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static const char *g_file = "arguments", *g_tensor = ""; /* what is being read, for messages */
static void die(const char *why) {
  fprintf(stderr, "sf_block_reader: error: %s: %s%s%s\n", g_file, g_tensor, *g_tensor ? ": " : "", why);
  exit(1);
}
static uint32_t le16(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; } /* little-endian, any host */
static uint32_t le32(const unsigned char *p) { return le16(p) | le16(p + 2) << 16; }
static float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static float f16(const unsigned char *p) {
  uint32_t h = le16(p), s = (h & 0x8000u) << 16, e = (h >> 10) & 31, m = h & 1023;
  if (e == 0) return s ? -((float)m / 16777216.0f) : (float)m / 16777216.0f; /* zero, subnormal: m * 2^-24 */
  return bits_f32(s | (e == 31 ? 0x7f800000u : (e + 112) << 23) | m << 13);  /* inf/nan, normal */
}
static int s8(unsigned char b) { return b < 128 ? (int)b : (int)b - 256; }
enum { F32, F16, BF16, INT8, INT4_SYM, INT4_ASYM, Q8_0, Q4_0, NTYPES };
static const char *const kTypes[NTYPES] = {"f32", "f16", "bf16", "int8", "int4_sym", "int4_asym", "q8_0", "q4_0"};
static uint64_t row_bytes(int t, uint64_t cols, uint64_t group) {
  uint64_t G = group ? (cols + group - 1) / group : 0, B = (cols + 31) / 32, codes = (cols + 1) / 2;
  const uint64_t rb[NTYPES] = {4 * cols, 2 * cols, 2 * cols, 4 + cols, 2 * G + codes, 4 * G + codes, 34 * B, 18 * B};
  return rb[t];
}
/* Decodes one row (row_bytes(t, cols, group) bytes at p) to f32, adding to *sum and *sq. */
static void row_sums(int t, const unsigned char *p, uint64_t cols, uint64_t group, double *sum, double *sq) {
  uint64_t i, G = group ? (cols + group - 1) / group : 0;
  const unsigned char *codes = p + (t == INT4_SYM ? 2 : 4) * G, *blk;
  for (i = 0; i < cols; i++) {
    int code; float v;
    switch (t) {
    case F32: v = bits_f32(le32(p + 4 * i)); break;
    case F16: v = f16(p + 2 * i); break;
    case BF16: v = bits_f32(le16(p + 2 * i) << 16); break;
    case INT8: v = bits_f32(le32(p)) * (float)s8(p[4 + i]); break;
    case INT4_SYM: case INT4_ASYM: code = (i & 1) ? codes[i / 2] >> 4 : codes[i / 2] & 15; /* even i: low nibble */
      v = t == INT4_SYM ? f16(p + 2 * (i / group)) * (float)(code - 8)
                        : f16(p + 2 * (i / group)) * (float)code + f16(p + 2 * (G + i / group)); break;
    case Q8_0: blk = p + 34 * (i / 32); v = f16(blk) * (float)s8(blk[2 + i % 32]); break;
    default: blk = p + 18 * (i / 32); /* q4_0: j < 16 low nibble of qs[j], else high nibble of qs[j - 16] */
      v = f16(blk) * (float)((i % 32 < 16 ? blk[2 + i % 32] & 15 : blk[2 + i % 32 - 16] >> 4) - 8);
    }
    *sum += v; *sq += (double)v * v;
  }
}
/* A JSON scanner for exactly the manifest and the shard header: the values used are strings without
   escapes and non-negative integers; the manifest's other values are skipped. */
typedef struct { const char *p, *end; } Cur;
static int peek(Cur *c) {
  while (c->p < c->end && *c->p && strchr(" \n\r\t", *c->p)) c->p++;
  return c->p < c->end ? (unsigned char)*c->p : -1;
}
static int accept(Cur *c, int ch) { if (peek(c) != ch) return 0; c->p++; return 1; }
static void expect(Cur *c, int ch) { if (!accept(c, ch)) die("malformed or unsupported JSON"); }
static void endq(Cur *c) { if (c->p == c->end) die("unterminated JSON string"); c->p++; }
static void str(Cur *c, char *out, size_t cap) { /* a string without escapes, into out[cap] */
  size_t n = 0;
  for (expect(c, '"'); c->p < c->end && *c->p != '"'; out[n++] = *c->p++)
    if (*c->p == '\\' || (unsigned char)*c->p < 0x20 || n + 1 >= cap) die("JSON string too long or escaped");
  endq(c); out[n] = 0;
}
static uint64_t num(Cur *c) {
  uint64_t v = 0; int digits = 0;
  for (peek(c); c->p < c->end && *c->p >= '0' && *c->p <= '9'; c->p++, digits++)
    if ((v = v * 10 + (uint64_t)(*c->p - '0')) >= (UINT64_C(1) << 48)) die("integer too large");
  if (!digits || (c->p < c->end && *c->p && strchr(".eE-+", *c->p))) die("expected a non-negative integer");
  return v;
}
/* Object members and array elements: call with *first = 1 until it returns 0. */
static int next(Cur *c, int open, int *first) {
  int close = open == '{' ? '}' : ']';
  if (*first) { *first = 0; expect(c, open); return !accept(c, close); }
  return accept(c, ',') || (expect(c, close), 0);
}
static int member(Cur *c, char *key, size_t cap, int *first) {
  if (!next(c, '{', first)) return 0;
  str(c, key, cap); expect(c, ':'); return 1;
}
static void skip(Cur *c, int depth) { /* any JSON value */
  int ch = peek(c), first = 1;
  const char *start = c->p;
  if (depth > 32) die("JSON nested too deeply");
  if (ch == '"') {
    for (c->p++; c->p < c->end && *c->p != '"'; c->p++) if (*c->p == '\\' && c->p + 1 < c->end) c->p++;
    endq(c);
  } else if (ch == '{' || ch == '[') {
    while (next(c, ch, &first)) { if (ch == '{') { skip(c, depth + 1); expect(c, ':'); } skip(c, depth + 1); }
  } else {
    while (c->p < c->end && *c->p && strchr("+-.0123456789eEtruefalsn", *c->p)) c->p++;
    if (c->p == start) die("malformed JSON");
  }
}
typedef struct { char name[128], file[128]; int type; uint64_t group, rows, cols, offset, nbytes, row_bytes; } Tensor;
static const char *const kKeys[] = {"name", "tensor", "file", "type", "group", "shape", "offset", "nbytes", "row_bytes"};
/* A tensor entry with the keys in `allowed` (bits of kKeys; group only for int4) and no others: units.embedding
   has file tensor type group shape row_bytes, a shard header's entries name type group shape offset nbytes. */
enum { EMB_KEYS = 0x13e, SHARD_KEYS = 0xf9 };
static void tensor(Cur *c, Tensor *t, unsigned allowed) {
  char key[16], s[16]; int first = 1, f2 = 1, dims = 0, k; unsigned seen = 0; uint64_t d[2] = {0, 0};
  memset(t, 0, sizeof *t);
  while (member(c, key, sizeof key, &first)) {
    for (k = 0; k < 9 && strcmp(key, kKeys[k]); k++) {}
    if (k == 9 || !(allowed >> k & 1) || (seen >> k & 1)) die("unknown or repeated key in a tensor entry");
    seen |= 1u << k;
    if (k <= 2) str(c, k == 2 ? t->file : t->name, sizeof t->name);
    else if (k == 3) {
      for (str(c, s, sizeof s), t->type = 0; t->type < NTYPES && strcmp(s, kTypes[t->type]); t->type++) {}
      if (t->type == NTYPES) die("unknown tensor type");
    } else if (k == 4) t->group = num(c);
    else if (k == 5) while (next(c, '[', &f2)) { if (dims == 2) die("more than 2 dimensions"); d[dims++] = num(c); }
    else *(k == 6 ? &t->offset : k == 7 ? &t->nbytes : &t->row_bytes) = num(c);
  }
  g_tensor = t->name;
  if ((seen | 0x10) != (allowed | 0x10) || !d[0] || (dims == 2 && !d[1])) die("missing key or non-positive shape");
  t->rows = dims == 2 ? d[0] : 1; t->cols = dims == 2 ? d[1] : d[0];
  if ((k = t->type == INT4_SYM || t->type == INT4_ASYM) != (int)(seen >> 4 & 1) || (k && (t->group < 2 || t->group % 2)))
    die("group missing, not even, or given for a type other than int4");
  if ((seen >> 8 & 1) && t->row_bytes != row_bytes(t->type, t->cols, t->group)) die("row_bytes disagrees with type and shape");
  t->row_bytes = row_bytes(t->type, t->cols, t->group);
}
static void report(const Tensor *t, const char *label, const unsigned char *p, uint64_t rows) {
  double sum = 0, sq = 0; uint64_t r;
  for (r = 0; r < rows; r++) row_sums(t->type, p + r * t->row_bytes, t->cols, t->group, &sum, &sq);
  printf("%s %s %llu %llu sum=%.9g sumsq=%.9g\n", label, kTypes[t->type], (unsigned long long)rows,
         (unsigned long long)t->cols, sum, sq);
}
static FILE *open_file(const char *dir, const char *name, long *size, int from_manifest) {
  static char path[4200]; FILE *f;
  if (from_manifest && (!*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, "..") ||
                        !strcmp(name, "manifest.json"))) die("a file name in units is not a plain file name");
  if (strlen(dir) + strlen(name) + 2 > sizeof path) die("path too long");
  strcat(strcat(strcpy(path, dir), "/"), name);
  g_file = path; g_tensor = "";
  if (!(f = fopen(path, "rb")) || fseek(f, 0, SEEK_END) || (*size = ftell(f)) < 0) die("cannot open or seek");
  return f;
}
static unsigned char *read_at(FILE *f, uint64_t off, uint64_t n) { /* n bytes at off; closes f */
  unsigned char *b = malloc(n ? n : 1);
  if (!b || fseek(f, (long)off, SEEK_SET) || fread(b, 1, n, f) != n) die("out of memory, or read failed (truncated?)");
  fclose(f); return b;
}
static uint64_t arg(const char *s) {
  if (!*s || strlen(s) > 12 || strspn(s, "0123456789") != strlen(s)) die("BLOCK_INDEX and TOKEN_ID must be integers");
  return strtoull(s, NULL, 10);
}
int main(int argc, char **argv) {
  uint64_t block, token, nblocks = 0, i, hl, end;
  char key[32], bname[128] = "", s[16], unit[32] = "", want[32], label[160];
  int f1 = 1, f2, f3, fmt = 0, ver = 0, have_emb = 0, nt = 0; Tensor emb, ts[64], *t;
  long size; FILE *f; unsigned char *buf, *row; Cur c;
  if (argc != 4) die("usage: sf_block_reader ARTIFACT_DIR BLOCK_INDEX TOKEN_ID");
  block = arg(argv[2]); token = arg(argv[3]);
  /* manifest.json: format, format_version, units.embedding and units.blocks[BLOCK_INDEX] */
  if ((f = open_file(argv[1], "manifest.json", &size, 0)), size > (1L << 26)) die("larger than 64 MiB");
  buf = read_at(f, 0, (uint64_t)size); c.p = (const char *)buf; c.end = c.p + size;
  while (member(&c, key, sizeof key, &f1)) {
    if (!strcmp(key, "format")) { str(&c, s, sizeof s); fmt = !strcmp(s, "shardforge"); }
    else if (!strcmp(key, "format_version")) ver = num(&c) == 3;
    else if (strcmp(key, "units") || nblocks || have_emb) skip(&c, 0);
    else for (f2 = 1; member(&c, key, sizeof key, &f2);) {
      if (!strcmp(key, "embedding") && !have_emb) { tensor(&c, &emb, EMB_KEYS); have_emb = 1; }
      else if (strcmp(key, "blocks") || nblocks) skip(&c, 1);
      else for (f3 = 1; next(&c, '[', &f3); nblocks++) if (nblocks == block) str(&c, bname, sizeof bname); else skip(&c, 1);
    }
  }
  if (peek(&c) != -1 || !fmt || !ver || !have_emb) die("not a shardforge manifest of format_version 3 with units");
  if (block >= nblocks) die("BLOCK_INDEX is past units.blocks");
  free(buf);
  /* embedding.bin: vocab rows of row_bytes; token t's row by seek to t x row_bytes */
  f = open_file(argv[1], emb.file, &size, 1);
  if ((uint64_t)size % emb.row_bytes || (uint64_t)size / emb.row_bytes != emb.rows) die("size is not vocab x row_bytes");
  if (token >= emb.rows) die("TOKEN_ID is past the vocabulary");
  row = read_at(f, token * emb.row_bytes, emb.row_bytes);
  /* the block's .shard, whole (memory: one block): magic, version, header, tensor table, tensors */
  f = open_file(argv[1], bname, &size, 1); buf = read_at(f, 0, (uint64_t)size);
  if (size < 16 || memcmp(buf, "SFSHARD", 8)) die("not a .shard file (bad magic)");
  if (le32(buf + 8) != 1) die("unsupported .shard version");
  if ((hl = le32(buf + 12)) > (uint64_t)size - 16 || (16 + hl) % 64) die("header past the end, or not padded to 64");
  c.p = (const char *)buf + 16; c.end = c.p + hl;
  for (f1 = 1; member(&c, key, sizeof key, &f1);)
    if (!strcmp(key, "unit") && !*unit) str(&c, unit, sizeof unit);
    else if (strcmp(key, "tensors") || nt) die("unexpected key in the header");
    else for (f2 = 1; next(&c, '[', &f2); nt++) { if (nt == 64) die("too many tensors"); tensor(&c, &ts[nt], SHARD_KEYS); }
  g_tensor = ""; sprintf(want, "block_%03llu", (unsigned long long)block);
  if (peek(&c) != -1 || strcmp(unit, want)) die("trailing header bytes, or unit is not this block's");
  for (i = 0, end = 16 + hl; i < (uint64_t)nt; end = ts[i].offset + ts[i].nbytes, i++) {
    g_tensor = (t = &ts[i])->name;
    if (t->offset % 64 || t->offset < end) die("offset not 64-aligned, out of order or overlapping");
    if (t->offset > (uint64_t)size || t->nbytes > (uint64_t)size - t->offset) die("tensor past the end of the file");
    if (t->nbytes % t->row_bytes || t->nbytes / t->row_bytes != t->rows) die("nbytes disagrees with type and shape");
    for (; end < t->offset; end++) if (buf[end]) die("nonzero bytes before the tensor");
  }
  sprintf(label, "%s[%llu]", emb.name, (unsigned long long)token); report(&emb, label, row, 1);
  for (i = 0; i < (uint64_t)nt; i++) report(&ts[i], ts[i].name, buf + ts[i].offset, ts[i].rows);
  return 0;
}
