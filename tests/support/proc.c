#include "proc.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *test_build_path(const char *name)
{
    static char buf[8][512];
    static int next;
    const char *build = getenv("TERN_BUILD");
    char *out = buf[next++ % 8];
    snprintf(out, 512, "%s/%s", build && *build ? build : "build", name);
    return out;
}

char *test_make_tmpdir(const char *tag)
{
    char tmpl[256];
    snprintf(tmpl, sizeof(tmpl), "/tmp/tern-test-%s-XXXXXX", tag);
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void test_rmtree(const char *dir)
{
    if (dir)
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int test_proc_start(struct test_proc *p, const char *dir, char *const argv[])
{
    static int counter;
    memset(p, 0, sizeof(*p));
    int n = counter++;
    snprintf(p->out_path, sizeof(p->out_path), "%s/proc%d.out", dir, n);
    snprintf(p->err_path, sizeof(p->err_path), "%s/proc%d.err", dir, n);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int in = open("/dev/null", O_RDONLY);
        int out = open(p->out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int err = open(p->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (in < 0 || out < 0 || err < 0)
            _exit(127);
        dup2(in, 0);
        dup2(out, 1);
        dup2(err, 2);
        execv(argv[0], argv);
        dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    p->pid = pid;
    return 0;
}

static void reap(struct test_proc *p, int wstatus)
{
    p->exited = true;
    if (WIFEXITED(wstatus))
        p->status = WEXITSTATUS(wstatus);
    else if (WIFSIGNALED(wstatus))
        p->status = 128 + WTERMSIG(wstatus);
}

void test_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

int test_proc_wait(struct test_proc *p, int timeout_ms)
{
    if (p->exited)
        return 1;
    if (p->pid <= 0)
        return 1;
    for (int waited = 0;; waited += 10) {
        int ws;
        pid_t r = waitpid(p->pid, &ws, WNOHANG);
        if (r == p->pid) {
            reap(p, ws);
            return 1;
        }
        if (waited >= timeout_ms)
            return 0;
        test_sleep_ms(10);
    }
}

void test_proc_signal(struct test_proc *p, int sig)
{
    if (p->pid > 0 && !p->exited)
        kill(p->pid, sig);
}

void test_proc_kill(struct test_proc *p)
{
    if (p->pid > 0 && !p->exited) {
        kill(p->pid, SIGKILL);
        int ws;
        if (waitpid(p->pid, &ws, 0) == p->pid)
            reap(p, ws);
    }
}

int test_vmm_argv(char **argv, int cap, const char *const *args, const char *serial,
                  char *scratch, size_t scratch_len, const char *control)
{
    int n = 0;
    snprintf(scratch, scratch_len, "file:%s", serial);
    argv[n++] = (char *)test_build_path("tern-vmm");
    argv[n++] = "run";
    for (; *args && n < cap - 6; args++)
        argv[n++] = (char *)*args;
    argv[n++] = "--serial";
    argv[n++] = scratch;
    argv[n++] = "--control";
    argv[n++] = (char *)control;
    argv[n] = NULL;
    return n;
}

int test_make_disk(const char *path, long long bytes)
{
    int fd = open(path, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    int rc = ftruncate(fd, (off_t)bytes);
    close(fd);
    return rc;
}

char *test_read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return strdup("");
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += r;
        if (cap - len - 1 == 0) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                buf = NULL;
            }
            buf = nb;
        }
    }
    fclose(f);
    if (!buf)
        return strdup("");
    buf[len] = '\0';
    return buf;
}

bool test_wait_for_text(const char *path, const char *needle, int timeout_ms)
{
    for (int waited = 0;; waited += 20) {
        char *t = test_read_text(path);
        bool found = strstr(t, needle) != NULL;
        free(t);
        if (found)
            return true;
        if (waited >= timeout_ms)
            return false;
        test_sleep_ms(20);
    }
}

long test_last_value(const char *path, const char *key)
{
    char *t = test_read_text(path);
    char *end = strrchr(t, '\n');
    if (end)
        end[1] = '\0';
    else
        t[0] = '\0';
    long v = -1;
    size_t kl = strlen(key);
    for (char *p = t; (p = strstr(p, key)) != NULL; p += kl)
        v = atol(p + kl);
    free(t);
    return v;
}

int test_count_text(const char *path, const char *needle)
{
    char *t = test_read_text(path);
    int n = 0;
    for (char *s = t; (s = strstr(s, needle)) != NULL; s += strlen(needle))
        n++;
    free(t);
    return n;
}

int test_write_pvh_elf(const char *path, const unsigned char *code, size_t len)
{
    /* Layout: ELF header, 2 program headers, the note, then code at file
     * offset 0x1000, loaded at 0x101000. */
    const uint64_t load_paddr = 0x100000;
    const size_t code_off = 0x1000;
    size_t file_len = code_off + len;
    uint8_t *img = calloc(1, file_len);
    if (!img)
        return -1;
    Elf64_Ehdr *eh = (Elf64_Ehdr *)img;
    memcpy(eh->e_ident, ELFMAG, SELFMAG);
    eh->e_ident[EI_CLASS] = ELFCLASS64;
    eh->e_ident[EI_DATA] = ELFDATA2LSB;
    eh->e_ident[EI_VERSION] = EV_CURRENT;
    eh->e_type = ET_EXEC;
    eh->e_machine = EM_X86_64;
    eh->e_version = EV_CURRENT;
    eh->e_entry = load_paddr + code_off;
    eh->e_phoff = sizeof(Elf64_Ehdr);
    eh->e_ehsize = sizeof(Elf64_Ehdr);
    eh->e_phentsize = sizeof(Elf64_Phdr);
    eh->e_phnum = 2;
    Elf64_Phdr *ph = (Elf64_Phdr *)(img + eh->e_phoff);
    size_t note_off = eh->e_phoff + 2 * sizeof(Elf64_Phdr);
    /* Xen note: namesz 4 ("Xen\0"), descsz 4, type 18 (PHYS32_ENTRY). */
    uint32_t note[6] = {4, 4, 18, 0, (uint32_t)(load_paddr + code_off), 0};
    memcpy(&note[3], "Xen", 4);
    memcpy(img + note_off, note, 20);
    ph[0] = (Elf64_Phdr){.p_type = PT_NOTE, .p_offset = note_off, .p_filesz = 20, .p_memsz = 20,
                         .p_align = 4};
    ph[1] = (Elf64_Phdr){.p_type = PT_LOAD, .p_flags = PF_R | PF_X, .p_offset = code_off,
                         .p_vaddr = load_paddr + code_off, .p_paddr = load_paddr + code_off,
                         .p_filesz = len, .p_memsz = len, .p_align = 0x1000};
    memcpy(img + code_off, code, len);
    FILE *f = fopen(path, "wb");
    int rc = -1;
    if (f) {
        rc = fwrite(img, 1, file_len, f) == file_len ? 0 : -1;
        if (fclose(f) != 0)
            rc = -1;
    }
    free(img);
    return rc;
}

bool test_pid_running(pid_t pid)
{
    char path[64], line[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool ok = fgets(line, sizeof(line), f) != NULL;
    fclose(f);
    char *rp = ok ? strrchr(line, ')') : NULL;
    return rp && rp[1] == ' ' && rp[2] != 'Z';
}
