#!/usr/bin/env bash
# Instructions per captured write, counted by callgrind: repeatable whatever else the machine is doing, where
# pgbench's rates swing with the load. A throwaway cluster (initdb) gets seven tables of one shape: plain, the
# floor trigger, the previous release's row capture (migration 0004, schema old), this release's by row and by
# statement, and the same two with a group column (--group-by amount). Each write then runs N and 2N times in single-user mode under callgrind; the difference ÷ N is one
# statement with its commit, without the start-up.
# Run: npm run build && test/bench/capture-instructions.sh [N]   (needs valgrind and PostgreSQL's server binaries)
set -euo pipefail
n=${1:-300}
bin=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
root=$(mktemp -d /tmp/capture-instructions.XXXXXX)
port=5499
run_as=()
if [ "$(id -u)" = 0 ]; then chown postgres "$root"; run_as=(runuser -u postgres --); fi
trap '"${run_as[@]}" "$bin/pg_ctl" -D "$root/data" stop -m immediate >/dev/null 2>&1 || true; rm -rf "$root"' EXIT

"${run_as[@]}" "$bin/initdb" -D "$root/data" -U postgres --auth=trust >/dev/null
"${run_as[@]}" "$bin/pg_ctl" -D "$root/data" -o "-p $port -k $root -c timezone=UTC" -l "$root/log" -w start >/dev/null
DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres" node --input-type=module -e '
  import postgres from "postgres"
  import { captureTable, migrate, outboxTable } from "./dist/index.js"
  const sql = postgres(process.env.DATABASE_URL, { max: 1, onnotice() {} })
  const shape = "(id bigserial primary key, name text not null, amount int not null, note text not null default repeat($$x$$, 200), updated_at timestamptz not null default now())"
  await migrate({ sql })
  await sql`create schema old`
  await migrate({ sql, schema: "old", target: "0004_capture_follows_columns" })
  for (const table of ["t_plain", "t_floor", "t_previous", "t_row", "t_statement", "t_row_group", "t_statement_group"]) {
    await sql.unsafe(`create table ${table} ${shape}`)
    await sql.unsafe(`insert into ${table} (name, amount) select $$item$$, n from generate_series(1, 10000) n`)
  }
  await sql.unsafe(`create table floor_outbox (id bigint generated always as identity primary key, event_id uuid not null default gen_random_uuid(),
      event_type text not null, entity_type text not null, entity_id text not null, payload jsonb not null, processed_at timestamptz,
      created_at timestamptz not null default now());
    create index on floor_outbox (id) where processed_at is null;
    create function floor_capture() returns trigger language plpgsql as $f$ begin
      insert into floor_outbox (event_type, entity_type, entity_id, payload)
      values ($$issue.$$ || lower(TG_OP), $$issue$$, NEW.id::text, jsonb_build_object($$data$$, to_jsonb(NEW)));
      return null; end $f$;
    create trigger floor_capture after insert or update on t_floor for each row execute function floor_capture()`)
  await sql`select old.outbox_capture_table(${"public.t_previous"}::regclass, ${"item"}, ${"id"}, ${[]}::text[], ${[]}::text[], ${[]}::text[], null, ${["insert", "update", "delete"]}::text[])`
  await captureTable(sql, outboxTable("public", "outbox"), { table: "t_row", entity: "item", mode: "row" })
  await captureTable(sql, outboxTable("public", "outbox"), { table: "t_statement", entity: "item", mode: "statement" })
  await captureTable(sql, outboxTable("public", "outbox"), { table: "t_row_group", entity: "item", mode: "row", groupBy: "amount" })
  await captureTable(sql, outboxTable("public", "outbox"), { table: "t_statement_group", entity: "item", mode: "statement", groupBy: "amount" })
  await sql.end()'
"${run_as[@]}" "$bin/pg_ctl" -D "$root/data" -w stop >/dev/null

count() { # statement, repetitions: total instructions of a single-user session running it that many times
  yes "$1" | head -"$2" > "$root/script.sql"
  chmod 644 "$root/script.sql"
  "${run_as[@]}" valgrind --tool=callgrind --callgrind-out-file="$root/callgrind.out" "$bin/postgres" --single -D "$root/data" \
    -c fsync=off -c autovacuum=off -c timezone=UTC postgres < "$root/script.sql" > /dev/null 2> "$root/valgrind.log"
  grep -E '^(summary|totals):' "$root/callgrind.out" | head -1 | awk '{print $2}'
}
printf '%-22s %12s %12s %12s %12s %12s %12s %12s\n' write plain floor previous by_row by_statement row_group statement_group
for write in "insert into %t (name, amount) values ('item', 1);" "update %t set amount = amount + 1 where id = 77;"; do
  line=$(echo "$write" | cut -d' ' -f1)
  for table in t_plain t_floor t_previous t_row t_statement t_row_group t_statement_group; do
    statement=${write//%t/$table}
    once=$(count "$statement" "$n"); twice=$(count "$statement" $((2 * n)))
    line="$line $(( (twice - once) / n ))"
  done
  printf '%-22s %12s %12s %12s %12s %12s %12s %12s\n' $line
done
