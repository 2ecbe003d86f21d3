/* Two requests at once through Hearth's C ABI: one is cancelled after its
 * first token, the other runs to its end and is printed.
 *
 * Build and run (from the repository root; scripts/c-example.sh does this):
 *   cargo build --release -p hearth-capi
 *   cc -std=c11 -Wall -Wextra -Icapi/include examples/c/two_requests.c \
 *      target/release/libhearth_capi.a -lpthread -ldl -lm -o two_requests
 *   ./two_requests models/SmolLM2-135M-Instruct.Q4_1.gguf
 *
 * Exits 0 only if the cancelled request ended as cancelled and the other
 * ended on its own (stop or length) with some text. */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hearth.h"

/* One request's state, shared with its callback (which runs on a thread
 * of the library's): everything below `lock` is guarded by it. */
typedef struct {
  const char *name;
  HearthEngine *engine;
  int cancel_after_first_token;
  pthread_mutex_t lock;
  pthread_cond_t done_cond;
  int done;
  size_t tokens;
  HearthEventKind last_kind;
  HearthFinishReason finish;
  char *text;
  size_t text_len;
} Job;

static void on_event(void *user_data, const HearthEvent *ev) {
  Job *job = user_data;
  pthread_mutex_lock(&job->lock);
  switch (ev->kind) {
  case HEARTH_EVENT_TOKEN: {
    char *grown = realloc(job->text, job->text_len + ev->text_len + 1);
    if (grown) {
      memcpy(grown + job->text_len, ev->text, ev->text_len);
      job->text_len += ev->text_len;
      grown[job->text_len] = '\0';
      job->text = grown;
    }
    job->tokens++;
    /* Cancelling from inside the callback is allowed; the request then
     * ends with a FINISHED event whose reason is CANCELLED. */
    if (job->cancel_after_first_token && job->tokens == 1)
      hearth_cancel(job->engine, ev->request_id);
    break;
  }
  case HEARTH_EVENT_FINISHED:
    job->finish = ev->finish_reason;
    job->done = 1;
    break;
  case HEARTH_EVENT_FAILED:
    fprintf(stderr, "%s failed: %s (%s)\n", job->name, ev->error_message,
            hearth_status_name(ev->error));
    job->done = 1;
    break;
  }
  job->last_kind = ev->kind;
  if (job->done)
    pthread_cond_signal(&job->done_cond);
  pthread_mutex_unlock(&job->lock);
}

static void job_init(Job *job, const char *name, HearthEngine *engine, int cancel) {
  memset(job, 0, sizeof *job);
  job->name = name;
  job->engine = engine;
  job->cancel_after_first_token = cancel;
  pthread_mutex_init(&job->lock, NULL);
  pthread_cond_init(&job->done_cond, NULL);
}

static void job_wait(Job *job) {
  pthread_mutex_lock(&job->lock);
  while (!job->done)
    pthread_cond_wait(&job->done_cond, &job->lock);
  pthread_mutex_unlock(&job->lock);
}

static const char *finish_name(HearthFinishReason r) {
  switch (r) {
  case HEARTH_FINISH_STOP: return "stop";
  case HEARTH_FINISH_LENGTH: return "length";
  case HEARTH_FINISH_CANCELLED: return "cancelled";
  default: return "none";
  }
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
    return 2;
  }
  fprintf(stderr, "hearth %s: loading %s\n", hearth_version(), argv[1]);

  HearthOptions options = hearth_options_default();
  options.kv_memory = 64u << 20;
  HearthEngine *engine = NULL;
  HearthStatus status = hearth_engine_open(argv[1], &options, &engine);
  if (status != HEARTH_OK) {
    fprintf(stderr, "open failed: %s: %s\n", hearth_status_name(status), hearth_last_error());
    return 1;
  }

  Job answer, cancelled;
  job_init(&answer, "answer", engine, 0);
  job_init(&cancelled, "cancelled", engine, 1);

  HearthRequest req = hearth_request_default(); /* greedy */
  req.prompt = "Which ocean is the largest?";
  req.max_tokens = 48;
  HearthRequest long_req = hearth_request_default();
  long_req.prompt = "Write a long story about a lighthouse keeper.";
  long_req.max_tokens = 200;

  uint64_t id_answer = 0, id_cancelled = 0;
  status = hearth_submit(engine, &req, on_event, &answer, &id_answer);
  if (status == HEARTH_OK)
    status = hearth_submit(engine, &long_req, on_event, &cancelled, &id_cancelled);
  if (status != HEARTH_OK) {
    fprintf(stderr, "submit failed: %s: %s\n", hearth_status_name(status), hearth_last_error());
    hearth_engine_free(engine);
    return 1;
  }

  job_wait(&answer);
  job_wait(&cancelled);
  hearth_engine_free(engine);

  printf("%s\n", answer.text ? answer.text : "");
  fprintf(stderr, "request %llu: %zu tokens, %s; request %llu: %zu tokens, %s\n",
          (unsigned long long)id_answer, answer.tokens, finish_name(answer.finish),
          (unsigned long long)id_cancelled, cancelled.tokens, finish_name(cancelled.finish));

  int ok = answer.last_kind == HEARTH_EVENT_FINISHED &&
           (answer.finish == HEARTH_FINISH_STOP || answer.finish == HEARTH_FINISH_LENGTH) &&
           answer.text_len > 0 && cancelled.last_kind == HEARTH_EVENT_FINISHED &&
           cancelled.finish == HEARTH_FINISH_CANCELLED;
  free(answer.text);
  free(cancelled.text);
  if (!ok) {
    fprintf(stderr, "FAILED: expected one answer (stop/length, non-empty) and one cancelled\n");
    return 1;
  }
  fprintf(stderr, "ok\n");
  return 0;
}
