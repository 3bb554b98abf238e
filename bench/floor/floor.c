/* The floor of a module read with rcache's request shape (bench/hotpath.py, issue 12).
 *
 * FLOOR.GET path [QUERY q] and FLOOR.LOOKUP path [QUERY q] do only what the Redis module
 * API makes every module pay for such a request: the command dispatch and context, the
 * entry's key name built from the path (the key is not the argument, so it must be a new
 * RedisModuleString), the key opened and closed, and the reply. They parse nothing, check
 * nothing and digest nothing: the key-name suffix and the value size are fixed at load time
 * (MODULE LOAD floor.so <key suffix> <value size>). Whatever rcache does on top of this is
 * its own cost; what this costs over native GET is the module API's.
 */
#include <stdlib.h>
#include <string.h>
#include "redismodule.h"

#define MAX_NAME 1024
static char suffix[256];
static size_t suffix_len;
static long long value_size;

/* Opens "rcache:{<path>}<suffix>"; NULL (with a null reply sent) when it holds no string. */
static RedisModuleKey *open_entry(RedisModuleCtx *ctx, RedisModuleString *path_arg, RedisModuleString **name) {
    size_t plen;
    const char *path = RedisModule_StringPtrLen(path_arg, &plen);
    char buf[MAX_NAME];
    if (plen + suffix_len + 9 > sizeof buf) {
        RedisModule_ReplyWithError(ctx, "ERR path too long for the floor module");
        return NULL;
    }
    memcpy(buf, "rcache:{", 8);
    memcpy(buf + 8, path, plen);
    buf[8 + plen] = '}';
    memcpy(buf + 9 + plen, suffix, suffix_len);
    *name = RedisModule_CreateString(ctx, buf, 9 + plen + suffix_len);
    RedisModuleKey *key = RedisModule_OpenKey(ctx, *name, REDISMODULE_READ);
    if (RedisModule_KeyType(key) != REDISMODULE_KEYTYPE_STRING) {
        RedisModule_CloseKey(key);
        RedisModule_FreeString(ctx, *name);
        RedisModule_ReplyWithNull(ctx);
        return NULL;
    }
    return key;
}

/* The stored string's last value_size bytes: the value, in rcache's layout. */
static void reply_value(RedisModuleCtx *ctx, RedisModuleKey *key) {
    size_t len;
    char *bytes = RedisModule_StringDMA(key, &len, REDISMODULE_READ);
    size_t n = len < (size_t)value_size ? len : (size_t)value_size;
    RedisModule_ReplyWithStringBuffer(ctx, bytes + len - n, n);
}

static int floor_get(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (argc < 2) return RedisModule_WrongArity(ctx);
    RedisModuleString *name;
    RedisModuleKey *key = open_entry(ctx, argv[1], &name);
    if (!key) return REDISMODULE_OK;
    reply_value(ctx, key);
    RedisModule_CloseKey(key);
    RedisModule_FreeString(ctx, name);
    return REDISMODULE_OK;
}

/* LOOKUP's reply shape: state, value, etag, age, ttl, lease. */
static int floor_lookup(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (argc < 2) return RedisModule_WrongArity(ctx);
    RedisModuleString *name;
    RedisModuleKey *key = open_entry(ctx, argv[1], &name);
    if (!key) return REDISMODULE_OK;
    RedisModule_ReplyWithArray(ctx, 6);
    RedisModule_ReplyWithSimpleString(ctx, "FRESH");
    reply_value(ctx, key);
    RedisModule_ReplyWithStringBuffer(ctx, "0123456789abcdef0123456789abcdef", 32);
    RedisModule_ReplyWithLongLong(ctx, 1000);
    RedisModule_ReplyWithLongLong(ctx, 3599000);
    RedisModule_ReplyWithNull(ctx);
    RedisModule_CloseKey(key);
    RedisModule_FreeString(ctx, name);
    return REDISMODULE_OK;
}

int RedisModule_OnLoad(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    if (RedisModule_Init(ctx, "floor", 1, REDISMODULE_APIVER_1) == REDISMODULE_ERR) return REDISMODULE_ERR;
    if (argc != 2) return REDISMODULE_ERR;
    size_t len;
    const char *s = RedisModule_StringPtrLen(argv[0], &len);
    if (len >= sizeof suffix) return REDISMODULE_ERR;
    memcpy(suffix, s, len);
    suffix_len = len;
    if (RedisModule_StringToLongLong(argv[1], &value_size) == REDISMODULE_ERR || value_size < 0) return REDISMODULE_ERR;
    if (RedisModule_CreateCommand(ctx, "floor.get", floor_get, "readonly fast", 1, 1, 1) == REDISMODULE_ERR)
        return REDISMODULE_ERR;
    if (RedisModule_CreateCommand(ctx, "floor.lookup", floor_lookup, "readonly fast", 1, 1, 1) == REDISMODULE_ERR)
        return REDISMODULE_ERR;
    return REDISMODULE_OK;
}
