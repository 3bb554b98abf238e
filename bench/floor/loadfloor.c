/* The floor of indexing a load through the Redis module API (issue 14, item 4).
 *
 * Any module that keeps an index of the keys an RDB load brings must be told of each
 * key (a `loaded` keyspace notification: Redis dispatches it to the module through a
 * temporary client and context) and must read the key's value to index it. The key name
 * the notification carries lives on rdbLoad's stack, and RedisModule_OpenKey retains its
 * name argument, so the name must first be copied into a new RedisModuleString. This
 * module does exactly that for every key starting with "rcache:" (open without touching
 * LRU/LFU, read the bytes in place, close) and nothing else: no parsing, no index.
 * What rcache's main thread spends beyond this during a load is its own cost.
 *
 * Loaded with the argument "scan" (MODULE LOAD loadfloor.so scan), it also reads every
 * such key of every database once at load time, through RedisModule_Scan with the key
 * handles the scan holds: the floor of indexing a populated server when the module is
 * loaded into it, as rcache's MODULE LOAD does.
 */
#include <string.h>
#include "redismodule.h"

/* Each value's first byte is added up here, so that the read is not optimised away. */
static unsigned long long bytes_seen;

static void read_value(RedisModuleKey *k) {
    if (RedisModule_KeyType(k) == REDISMODULE_KEYTYPE_STRING) {
        size_t vlen;
        const char *v = RedisModule_StringDMA(k, &vlen, REDISMODULE_READ);
        if (v && vlen) bytes_seen += (unsigned char)v[0];
    }
}

static void scanned(RedisModuleCtx *ctx, RedisModuleString *name, RedisModuleKey *k, void *privdata) {
    (void)ctx;
    (void)privdata;
    size_t len;
    const char *bytes = RedisModule_StringPtrLen(name, &len);
    if (k && len >= 7 && memcmp(bytes, "rcache:", 7) == 0) read_value(k);
}

static int on_loaded(RedisModuleCtx *ctx, int type, const char *event, RedisModuleString *key) {
    (void)type;
    (void)event;
    size_t len;
    const char *name = RedisModule_StringPtrLen(key, &len);
    if (len < 7 || memcmp(name, "rcache:", 7) != 0) return REDISMODULE_OK;
    RedisModuleString *copy = RedisModule_CreateString(ctx, name, len);
    RedisModuleKey *k = RedisModule_OpenKey(ctx, copy, REDISMODULE_READ | REDISMODULE_OPEN_KEY_NOTOUCH);
    read_value(k);
    RedisModule_CloseKey(k);
    RedisModule_FreeString(ctx, copy);
    return REDISMODULE_OK;
}

int RedisModule_OnLoad(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (RedisModule_Init(ctx, "loadfloor", 1, REDISMODULE_APIVER_1) == REDISMODULE_ERR) return REDISMODULE_ERR;
    size_t len;
    if (argc > 0 && strcmp(RedisModule_StringPtrLen(argv[0], &len), "scan") == 0) {
        for (int db = 0; RedisModule_SelectDb(ctx, db) == REDISMODULE_OK; db++) {
            RedisModuleScanCursor *cursor = RedisModule_ScanCursorCreate();
            while (RedisModule_Scan(ctx, cursor, scanned, NULL)) {
            }
            RedisModule_ScanCursorDestroy(cursor);
        }
        RedisModule_SelectDb(ctx, 0);
    }
    return RedisModule_SubscribeToKeyspaceEvents(ctx, REDISMODULE_NOTIFY_LOADED, on_loaded);
}
