import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { waitFor } from './wait-for.js'

// systemd's side of sd_notify(3): a unix datagram socket. Node cannot bind one, Python can. Each datagram
// is printed as one JSON line; file descriptors passed with it (systemd-notify's BARRIER=1) are closed,
// which is how systemd tells systemd-notify it has read the message.
const listener = `
import array, json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print(json.dumps("listening"), flush=True)
while True:
    data, ancillary, flags, address = s.recvmsg(65536, socket.CMSG_SPACE(64 * 4))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            for fd in fds:
                os.close(fd)
    print(json.dumps(data.decode()), flush=True)
`

export interface NotifyMessage {
  /** The datagram's text, e.g. `READY=1`. */
  text: string
  /** When the test received it (ms since the epoch). */
  at: number
}

/** A NOTIFY_SOCKET that records what is sent to it, as systemd would receive it. */
export interface NotifySocket {
  readonly path: string
  readonly messages: NotifyMessage[]
  close(): Promise<void>
}

export async function listenNotifySocket(): Promise<NotifySocket> {
  const directory = await mkdtemp(join(tmpdir(), 'outbox-notify-'))
  const path = join(directory, 'notify.sock')
  const child: ChildProcess = spawn('python3', ['-c', listener, path], { stdio: ['ignore', 'pipe', 'inherit'] })
  const messages: NotifyMessage[] = []
  let listening = false
  let buffered = ''
  child.stdout!.on('data', (chunk) => {
    buffered += chunk
    for (let end = buffered.indexOf('\n'); end >= 0; end = buffered.indexOf('\n')) {
      const text = JSON.parse(buffered.slice(0, end)) as string
      buffered = buffered.slice(end + 1)
      if (text === 'listening' && !listening) listening = true
      else messages.push({ text, at: Date.now() })
    }
  })
  await waitFor('the notify socket listening', () => listening, 10_000)
  return {
    path,
    messages,
    close: async () => {
      if (child.exitCode === null) {
        child.kill('SIGKILL')
        await new Promise((resolve) => child.once('exit', resolve))
      }
      await rm(directory, { recursive: true, force: true })
    },
  }
}
