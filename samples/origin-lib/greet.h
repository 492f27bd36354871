#ifndef GREET_H
#define GREET_H

/* The greeting, owned by libgreet.so.1. */
const char *greet_message(void);

#endif
