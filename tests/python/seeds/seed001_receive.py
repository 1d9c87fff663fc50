import pika

# 连接到RabbitMQ服务器
connection = pika.BlockingConnection(pika.ConnectionParameters('localhost'))
channel = connection.channel()

# 声明一个队列
channel.queue_declare(queue='hello')

# 设置队列的消费者
def callback(ch, method, properties, body):
    print(" [x] Received %r" % body)

# 开启消费者
channel.basic_consume(queue='hello',
                      auto_ack=True,
                      on_message_callback=callback)

# 启动消费者
channel.start_consuming()
