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
 */
#include <string.h>
#include "redismodule.h"

/* Each value's first byte is added up here, so that the read is not optimised away. */
static unsigned long long bytes_seen;

static int on_loaded(RedisModuleCtx *ctx, int type, const char *event, RedisModuleString *key) {
    (void)type;
    (void)event;
    size_t len;
    const char *name = RedisModule_StringPtrLen(key, &len);
    if (len < 7 || memcmp(name, "rcache:", 7) != 0) return REDISMODULE_OK;
    RedisModuleString *copy = RedisModule_CreateString(ctx, name, len);
    RedisModuleKey *k = RedisModule_OpenKey(ctx, copy, REDISMODULE_READ | REDISMODULE_OPEN_KEY_NOTOUCH);
    if (RedisModule_KeyType(k) == REDISMODULE_KEYTYPE_STRING) {
        size_t vlen;
        const char *v = RedisModule_StringDMA(k, &vlen, REDISMODULE_READ);
        if (v && vlen) bytes_seen += (unsigned char)v[0];
    }
    RedisModule_CloseKey(k);
    RedisModule_FreeString(ctx, copy);
    return REDISMODULE_OK;
}

int RedisModule_OnLoad(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    (void)argv;
    (void)argc;
    if (RedisModule_Init(ctx, "loadfloor", 1, REDISMODULE_APIVER_1) == REDISMODULE_ERR) return REDISMODULE_ERR;
    return RedisModule_SubscribeToKeyspaceEvents(ctx, REDISMODULE_NOTIFY_LOADED, on_loaded);
}
