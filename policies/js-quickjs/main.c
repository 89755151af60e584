// A WASI-mode policy (executionMode "wasi") whose logic is JavaScript run by QuickJS, the
// shape of a Javy policy: the host runs it as a command with argv `policy.wasm validate` or
// `policy.wasm validate-settings`, the request (or the settings) on stdin; the script's
// `validate(input)` or `validateSettings(input)` gets that text and returns the answer's JSON
// text, written to stdout.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quickjs.h"
#include "policy_js.h"

static char *read_all(FILE *in, size_t *length) {
    size_t capacity = 64 * 1024, used = 0;
    char *buffer = malloc(capacity);
    while (buffer) {
        used += fread(buffer + used, 1, capacity - used, in);
        if (used < capacity) {
            break;
        }
        capacity *= 2;
        char *grown = realloc(buffer, capacity);
        if (!grown) {
            free(buffer);
            return NULL;
        }
        buffer = grown;
    }
    *length = used;
    return buffer;
}

static int report_exception(JSContext *ctx, const char *what) {
    JSValue exception = JS_GetException(ctx);
    const char *message = JS_ToCString(ctx, exception);
    fprintf(stderr, "%s: %s\n", what, message ? message : "unknown error");
    JS_FreeCString(ctx, message);
    JS_FreeValue(ctx, exception);
    return 1;
}

int main(int argc, char **argv) {
    const char *function = NULL;
    if (argc >= 2 && strcmp(argv[1], "validate") == 0) {
        function = "validate";
    } else if (argc >= 2 && strcmp(argv[1], "validate-settings") == 0) {
        function = "validateSettings";
    } else {
        fprintf(stderr, "usage: policy.wasm validate|validate-settings\n");
        return 2;
    }
    size_t length = 0;
    char *input = read_all(stdin, &length);
    if (!input) {
        fprintf(stderr, "cannot read stdin\n");
        return 1;
    }
    JSRuntime *runtime = JS_NewRuntime();
    JSContext *ctx = JS_NewContext(runtime);
    JSValue loaded = JS_Eval(ctx, (const char *)policy_js, policy_js_len, "policy.js", JS_EVAL_TYPE_GLOBAL);
    if (JS_IsException(loaded)) {
        return report_exception(ctx, "cannot load policy.js");
    }
    JS_FreeValue(ctx, loaded);
    JSValue global = JS_GetGlobalObject(ctx);
    JSValue handler = JS_GetPropertyStr(ctx, global, function);
    JSValue argument = JS_NewStringLen(ctx, input, length);
    JSValue answer = JS_Call(ctx, handler, global, 1, &argument);
    if (JS_IsException(answer)) {
        return report_exception(ctx, function);
    }
    size_t answer_length = 0;
    const char *text = JS_ToCStringLen(ctx, &answer_length, answer);
    if (!text) {
        return report_exception(ctx, "the answer is not a string");
    }
    fwrite(text, 1, answer_length, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    return 0;
}
