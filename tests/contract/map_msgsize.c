#include <forkpool.h>
#include <stdio.h>
#include <string.h>
static int len(fp_call *c, const msgpack_object *a, msgpack_packer *o){(void)c;return fp_pack(o,"I",(int64_t)(a->type==MSGPACK_OBJECT_BIN?(int64_t)a->via.bin.size:-1));}
static const fp_task tasks[]={{"len",len},{NULL,NULL}};
int main(void){
  fp_pool_options o = FP_POOL_OPTIONS_INIT; fp_pool *p;
  o.workers=1; o.tasks=tasks; o.max_message=1024;
  if (fp_pool_create(&p,&o)) return 1;
  static char buf[4096];
  size_t sizes[] = {10, 700, 800, 1000, 1100, 3000, 10};
  msgpack_sbuffer sb; msgpack_packer pk; msgpack_sbuffer_init(&sb); msgpack_packer_init(&pk,&sb,msgpack_sbuffer_write);
  msgpack_pack_array(&pk, 7);
  for (int i=0;i<7;i++){ msgpack_pack_bin(&pk,sizes[i]); msgpack_pack_bin_body(&pk,buf,sizes[i]); }
  fp_map_input in={sb.data,sb.size,NULL,NULL}; fp_map_iter *m; fp_map_item it;
  int rc=fp_map(p,"len",&in,NULL,&m); printf("fp_map: %s\n", fp_err_name(rc));
  while ((rc=fp_map_next(m,10000,&it))==1) printf(" item %zu (%zu bytes): %s %s\n", it.index, sizes[it.index], fp_err_name(it.err), it.err? it.error : "");
  printf("end: %d %s\n", rc, fp_err_name(rc));
  fp_map_destroy(m); fp_pool_destroy(p); msgpack_sbuffer_destroy(&sb); return 0;
}
