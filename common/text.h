/* Text that reaches a log or a terminal. Strings from outside (a VM name or
 * disk path from a request, a guest's command line, an agent's error
 * message) may hold a newline that forges a whole log line, or an escape
 * sequence that a terminal obeys. Every such string goes through here on
 * its way out.
 *
 * What is escaped ("control"): the C0 controls and DEL (bytes 0x00-0x1f,
 * 0x7f), the C1 controls (U+0080-U+009F; some terminals obey them), and
 * every byte that is not part of well-formed UTF-8 (a lone 0x9b is CSI to
 * an 8-bit terminal). Escapes: \n, \r, \t, and \xNN for every other byte
 * (ESC -> \x1b, U+009B -> \xc2\x9b). Backslashes are left alone: the point
 * is that what comes out is harmless, not that it can be decoded again. */
#ifndef TERN_COMMON_TEXT_H
#define TERN_COMMON_TEXT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Keep '\n' as it is (a message that is meant to span lines, such as a
 * VMM log's tail shown by ternctl); everything else is still escaped. */
#define TEXT_KEEP_NEWLINES 1u

/* Length in bytes of the control sequence at s (see above), 0 if s starts
 * with printable text or is at its end. */
size_t text_control_len(const char *s);

/* The first control byte in s (NULL if none): what cannot be shown as it
 * is. */
const char *text_find_control(const char *s);

/* Makes s well-formed UTF-8 in place, for text bound for JSON (jansson
 * takes no other strings): every byte that is not part of well-formed
 * UTF-8 becomes '?', also the start of a character cut at the end (a
 * message cut to its buffer). Controls stay (JSON escapes them). */
void text_utf8_fix(char *s);

/* Copies src into dst[cap] escaped. Never cuts an escape or a UTF-8
 * character in half; dst is always NUL-terminated (cap > 0). Returns the
 * bytes written (without the NUL); true in *cut if src did not fit. cut
 * may be NULL. */
size_t text_escape(char *dst, size_t cap, const char *src, unsigned flags, bool *cut);

/* Writes s escaped to f (any length). */
void text_fputs(const char *s, FILE *f, unsigned flags);

/* printf into a line, escaped, then written to f with one newline at the
 * end, in one fputs (lines from threads do not interleave on an unbuffered
 * or line-buffered stream). A trailing newline in the format is the line's
 * end, not text. Lines longer than 4 KiB are cut, ending in "...". */
void text_put_line(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The same with a va_list, after `prefix` (the program's own text, a
 * timestamp: written as it is). */
void text_vput_line(FILE *f, const char *prefix, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#endif
