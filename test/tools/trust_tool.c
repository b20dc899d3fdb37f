/*
 * trust_tool.c — common/trust.h over files, for tests that check fedmq's
 * envelopes against another implementation (test/it_trust_interop.sh with
 * test/trust_interop.py). Not an operator's tool: keys for a real fleet
 * come from broker/fedmq_keygen.
 *
 *   trust_tool keygen PRIV.pem PUB.pem        prints the key id
 *   trust_tool kid KEY.pem                    public or private key file
 *   trust_tool sign PRIV.pem IN OUT           OUT = signed envelope of IN
 *   trust_tool verify PUB.pem IN OUT          OUT = the verified body
 *   trust_tool seal PUB.pem FLEET DEV R IN OUT
 *   trust_tool open PRIV.pem FLEET DEV IN OUT prints the round
 *
 * Exit status: 0 done; 1 refused or failed, with "refused: <reason>:
 * <detail>" on stderr (the reason is the SPEC §10 name); 2 usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmq.h"
#include "trust.h"

#define IN_MAX ((size_t)64 << 20)

static int refuse(fmq_err e, const char *what)
{
    fprintf(stderr, "refused: %s: %s\n", fmq_errname(e),
            what && *what ? what : fmq_strerror(e));
    return 1;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: trust_tool keygen PRIV PUB | kid KEY | sign PRIV IN OUT |\n"
            "       verify PUB IN OUT | seal PUB FLEET DEV ROUND IN OUT |\n"
            "       open PRIV FLEET DEV IN OUT\n");
    return 2;
}

static fmq_err load_any(const char *path, fmq_trust_key **k)
{
    fmq_err e = fmq_trust_key_load_public(path, k);
    return e == FMQ_ERR_KEY ? fmq_trust_key_load_private(path, k) : e;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    const char *cmd = argv[1];
    fmq_trust_key *k = NULL;
    fmq_buf out;
    fmq_buf_init(&out);
    uint8_t *in = NULL;
    size_t in_len = 0;
    fmq_codec_detail d = {{0}};
    fmq_err e;
    int rc = 0;

    if (!strcmp(cmd, "keygen") && argc == 4) {
        if ((e = fmq_trust_key_generate(NULL, &k)) ||
            (e = fmq_trust_key_write_pem(k, true, &out)) ||
            (e = fmq_file_write_atomic(argv[2], out.data, out.len)))
            goto fail;
        fmq_buf_reset(&out);
        if ((e = fmq_trust_key_write_pem(k, false, &out)) ||
            (e = fmq_file_write_atomic(argv[3], out.data, out.len)))
            goto fail;
        printf("%s\n", fmq_trust_key_id(k));
    } else if (!strcmp(cmd, "kid") && argc == 3) {
        if ((e = load_any(argv[2], &k)))
            goto fail;
        printf("%s\n", fmq_trust_key_id(k));
    } else if (!strcmp(cmd, "sign") && argc == 5) {
        if ((e = fmq_trust_key_load_private(argv[2], &k)) ||
            (e = fmq_file_read(argv[3], IN_MAX, &in, &in_len)) ||
            (e = fmq_trust_sign(k, NULL, in, in_len, &out)) ||
            (e = fmq_file_write_atomic(argv[4], out.data, out.len)))
            goto fail;
    } else if (!strcmp(cmd, "verify") && argc == 5) {
        const uint8_t *body = NULL;
        size_t body_len = 0;
        if ((e = load_any(argv[2], &k)) ||
            (e = fmq_file_read(argv[3], IN_MAX, &in, &in_len)))
            goto fail;
        const fmq_trust_key *ks[] = {k};
        if ((e = fmq_trust_verify(ks, 1, in, in_len, NULL, &body, &body_len,
                                  &d)) ||
            (e = fmq_file_write_atomic(argv[4], body, body_len)))
            goto fail;
    } else if (!strcmp(cmd, "seal") && argc == 8) {
        char *end = NULL;
        unsigned long long r = strtoull(argv[5], &end, 10);
        if (!*argv[5] || *end)
            return usage();
        if ((e = load_any(argv[2], &k)) ||
            (e = fmq_file_read(argv[6], IN_MAX, &in, &in_len)) ||
            (e = fmq_trust_seal(k, NULL, argv[3], argv[4], r, in, in_len,
                                &out)) ||
            (e = fmq_file_write_atomic(argv[7], out.data, out.len)))
            goto fail;
    } else if (!strcmp(cmd, "open") && argc == 7) {
        uint64_t r = 0;
        if ((e = fmq_trust_key_load_private(argv[2], &k)) ||
            (e = fmq_file_read(argv[5], IN_MAX, &in, &in_len)) ||
            (e = fmq_trust_open(k, NULL, argv[3], argv[4], in, in_len, NULL,
                                &out, &r, &d)) ||
            (e = fmq_file_write_atomic(argv[6], out.data, out.len)))
            goto fail;
        printf("%llu\n", (unsigned long long)r);
    } else {
        return usage();
    }
    goto done;
fail:
    rc = refuse(e, d.what);
done:
    fmq_free(in);
    fmq_buf_fini(&out);
    fmq_trust_key_destroy(&k);
    return rc;
}
